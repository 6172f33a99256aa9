import sys

from codeq.cli import main

sys.exit(main())
