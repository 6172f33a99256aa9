"""``python -m codeq.store``: the names of this release's function libraries, one a line (what
an operator keeps when deleting an old release's, docs/deploy.md)."""

from codeq.store.scripts import load_scripts

print("\n".join(sorted(script.function for script in load_scripts().values())))
