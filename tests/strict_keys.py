"""A strict-keys checker for the store's Lua scripts (issue 13): what KVRocks'
``lua-strict-key-accessing yes`` enforces, proven on a plain redis-server.

:func:`instrument` copies a :class:`~codeq.store.scripts.Script` so that every
``redis.call(...)`` / ``redis.pcall(...)`` first asks the server which arguments of that exact
command are keys (``COMMAND GETKEYS``, run inside the script) and raises a Lua error naming the
key, the command and the script for any key not in ``KEYS``. The key positions are the
server's own (its key specs: the logic Redis Cluster routes by), for the arguments actually
sent, so commands with movable keys (``XREAD ... STREAMS``, ``ZUNIONSTORE numkeys``) and
container commands (``XINFO GROUPS``) need no rule here, and no table of ours can drift.

Redis 7 protects the ``redis`` table, so the call sites are rewritten textually to local
wrappers. The rewrite must see every call: a script that names ``redis.call`` any other way
(an alias, ``redis['call']``, ``_G``), or catches Lua errors (``pcall``, which would swallow the
checker's), or registers a function of its own, is refused with :class:`UncheckedScript`. A
script is a library of one function (codeq/store/scripts.py): the prologue is one line put
before the library's first line after its name, so error positions keep the shipped line
numbers, and the function's first step is ``__strict_begin(KEYS)``, which takes that call's
keys (and its coverage key) as the declared ones.

:class:`StrictRun` installs the checked copies on one store (a test-only swap of its
``_scripts``), records which scripts ran and every violation (even one a caller swallowed), and
which call sites ran: a site that never ran is acceptable only when the server says its keys
are fixed references (``K.tasks``, ``D.due``, ``KEYS[3]``), which the sites that did run
have proven declared. A site with a computed key must have run under the checker.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any, NamedTuple

from codeq.store.redis_store import RedisStore
from codeq.store.scripts import SCRIPT_NAMES, Script

__all__ = [
    "UNDECLARED",
    "Site",
    "StrictRun",
    "UncheckedScript",
    "call_sites",
    "code_only",
    "instrument",
    "prologue",
]

#: what the checker's error says (and how a recorder knows one when it sees it)
UNDECLARED = "undeclared key"

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_CALL_SITE = re.compile(r"\bredis\s*\.\s*(p?call)\s*\(")
_REDIS_USE = re.compile(r"\bredis\b(?:\s*\.\s*(\w+))?")
# members of the redis table that touch no key
_KEYLESS = re.compile(
    r"log|LOG_\w+|sha1hex|error_reply|status_reply|setresp|set_repl|REPL_\w+"
    r"|replicate_commands|breakpoint|debug|acl_check_cmd|REDIS_VERSION(?:_NUM)?"
    r"|register_function"
)
# ways around the rewrite: catching the checker's error, or reaching `redis` by another name.
# `pcall(cjson.decode, ...)` (how lib.lua reads a record that may be poison) calls no redis.
_EVASIONS = re.compile(
    r"(?<![\w.])(?:x?pcall(?!\(cjson\.decode,)|_G|getfenv|setfenv|loadstring|load|rawget)\b"
)
_LONG_OPEN = re.compile(r"\[(=*)\[")
# the section marker codeq.store.scripts puts between a library and the script's own file
_OWN_FILE = re.compile(r"^-- ==== (\S+\.lua) ====$", re.MULTILINE)
# a key argument that names one of the script's declared keys, whatever the branch
_FIXED_KEY = re.compile(r"(?:K|D)\.\w+|KEYS\[\d+\]")
_PLACEHOLDER = "\x01strict-arg:"
_LITERAL = re.compile(r"'([^'\\]*)'|\"([^\"\\]*)\"|(-?\d+)")

# a library's one function, and how it registers it, last (codeq.store.scripts.compose)
_FUNCTION = re.compile(r"^local function __codeq\(KEYS, ARGV\)", re.MULTILINE)
_FLAGS = r"\{(?:'no-writes')?\}"
_REGISTRATION = re.compile(
    r"\nend\nif redis\.REDIS_VERSION then\n"
    rf"  redis\.register_function\{{function_name = '(\w+)', callback = __codeq,"
    rf" flags = {_FLAGS}\}}\n"
    rf"else\n  redis\.register_function\('(\w+)', __codeq, {_FLAGS}\)\nend\n\Z"
)

_PROLOGUE = " ".join(
    (
        "local __strict_cover = nil",
        "local __strict_declared = {}",
        "local function __strict_begin(keys)",
        "  __strict_cover = @COVER@",
        "  __strict_declared = {}",
        "  for _, k in ipairs(keys) do __strict_declared[k] = true end",
        "end",
        "local function __strict_check(site, ...)",
        "  if __strict_cover then redis.call('HINCRBY', __strict_cover, '@NAME@:' .. site, 1) end",
        "  if select('#', ...) < 2 then return end",  # no argument, no key
        "  local keys = redis.pcall('COMMAND', 'GETKEYS', ...)",
        "  if keys.err then",
        "    if string.find(keys.err, 'no key arguments', 1, true) then return end",
        "    error('strict keys: cannot tell the keys of ' .. string.upper(tostring((...)))",
        "          .. ' in @NAME@: ' .. keys.err, 3)",
        "  end",
        "  for _, key in ipairs(keys) do",
        "    if not __strict_declared[key] then",
        f"      error('{UNDECLARED} ' .. key .. ' touched by ' .. string.upper(tostring((...)))",
        "            .. ' in @NAME@ (not in KEYS)', 3)",
        "    end",
        "  end",
        "end",
        "local function __strict_call(site, ...)",
        "  __strict_check(site, ...) return redis.call(...) end",
        "local function __strict_pcall(site, ...)",
        "  __strict_check(site, ...) return redis.pcall(...) end",
        "",  # the script's own first line follows on this line
    )
)


class UncheckedScript(ValueError):
    """A script reaches the server in a way the checker's rewrite would not see."""


class Site(NamedTuple):
    """One ``redis.call``/``redis.pcall`` of a script, as written."""

    script: str
    number: int  # its number in the checked script
    file: str  # the .lua file it is written in (a library's sites are in every user's copy)
    line: int  # its line in that file
    offset: int  # where it starts in that file
    args: tuple[str, ...]  # the argument expressions

    def __str__(self) -> str:
        return f"{self.file}:{self.line} redis.call({', '.join(self.args)})"


def code_only(source: str) -> str:
    """``source`` with Lua comments and string literals blanked (newlines kept, so offsets
    and line numbers still match)."""
    out: list[str] = []
    i, n = 0, len(source)

    def blank(end: int) -> int:
        out.append(re.sub(r"[^\n]", " ", source[i:end]))
        return end

    while i < n:
        if source.startswith("--", i):
            long = _LONG_OPEN.match(source, i + 2)
            if long:
                close = source.find("]" + long.group(1) + "]", long.end())
                i = blank(n if close < 0 else close + len(long.group(1)) + 2)
            else:
                newline = source.find("\n", i)
                i = blank(n if newline < 0 else newline)
        elif source[i] in "'\"":
            j = i + 1
            while j < n and source[j] != source[i]:
                j += 2 if source[j] == "\\" else 1
            i = blank(min(j + 1, n))
        elif (long := _LONG_OPEN.match(source, i)) is not None:
            close = source.find("]" + long.group(1) + "]", long.end())
            i = blank(n if close < 0 else close + len(long.group(1)) + 2)
        else:
            out.append(source[i])
            i += 1
    return "".join(out)


def _line(source: str, offset: int) -> int:
    return source.count("\n", 0, offset) + 1


def _arguments(source: str, code: str, start: int) -> tuple[str, ...]:
    """The top-level argument expressions of the call whose ``(`` ends at ``start``."""
    args: list[str] = []
    depth, begin = 0, start
    for i in range(start, len(code)):
        ch = code[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}" and depth:
            depth -= 1
        elif ch in ",)" and not depth:
            args.append(" ".join(source[begin:i].split()))
            if ch == ")":
                return tuple(a for a in args if a)
            begin = i + 1
    raise UncheckedScript(f"unbalanced call at offset {start}")


def call_sites(script: Script) -> list[Site]:
    """Every call site of ``script``, in order (the order :func:`instrument` numbers them)."""
    code = code_only(script.source)
    # the files the text is made of: the library first, then each after its "-- ==== " line
    marks = [(m.end() + 1, m.group(1)) for m in _OWN_FILE.finditer(script.source)]
    lib = "dlv_lib.lua" if script.name.startswith("dlv_") else "lib.lua"
    first = script.source.find("\n") + 1  # the library file starts after the name line
    sites: list[Site] = []
    for index, m in enumerate(_CALL_SITE.finditer(code), start=1):
        at = m.start()
        if not marks:
            file, base = f"{script.name}.lua", first
        else:
            file, base = lib, first
            for start, name in marks:
                if at >= start:
                    file, base = name, start
        line = _line(script.source, at) - _line(script.source, base) + 1
        args = _arguments(script.source, code, m.end())
        sites.append(Site(script.name, index, file, line, at - base, args))
    return sites


def prologue(name: str, *, coverage: bool = False) -> str:
    """What :func:`instrument` puts before script ``name``'s library: one line, no newline."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"script name {name!r} cannot be quoted in Lua as it is")
    cover = "table.remove(keys)" if coverage else "nil"
    return _PROLOGUE.replace("@NAME@", name).replace("@COVER@", cover)


def _function(source: str) -> tuple[re.Match[str], re.Match[str]]:
    """Where ``source`` starts its one function, and how it registers it (under one name):
    in the form codeq.store.scripts.compose writes, or the checker would not start it."""
    code = code_only(source)
    heads = [m for m in _FUNCTION.finditer(source) if code.startswith("local", m.start())]
    registration = _REGISTRATION.search(source)
    if (
        len(heads) != 1
        or registration is None
        or registration.group(1) != registration.group(2)
        or code.count("register_function") != 2
        or "register_function" in code[: registration.start()]
    ):
        raise UncheckedScript("not a library of one function: the checker would not start it")
    return heads[0], registration


def instrument(script: Script, *, coverage: bool = False) -> Script:
    """A copy of ``script`` that fails on any key it touches outside KEYS (same name, a
    function and library of its own). With ``coverage``, the caller appends one more key to
    KEYS, a hash in which each call site counts its runs (the script itself never sees that
    key), and the copy has no ``no-writes`` flag (that count is a write). Raises
    :class:`UncheckedScript` when a call could escape the rewrite."""
    shebang = f"#!lua name={script.function}\n"
    if not script.source.startswith(shebang) or _function(script.source)[1].group(1) != (
        script.function
    ):
        raise UncheckedScript(f"{script.name}: not the library of {script.function}")
    head = prologue(script.name, coverage=coverage)
    code = code_only(script.source)
    pieces: list[str] = []
    done = len(shebang)
    for index, m in enumerate(_CALL_SITE.finditer(code), start=1):
        pieces += [script.source[done : m.start()], f"__strict_{m.group(1)}({index}, "]
        done = m.end()
    body = "".join([*pieces, script.source[done:]])
    checked = code_only(body)
    for use in _REDIS_USE.finditer(checked):
        member = use.group(1)
        if member is None or not _KEYLESS.fullmatch(member):
            raise UncheckedScript(
                f"{script.name}, line {_line(body, use.start()) + 1}: "
                f"{use.group(0)!r} is not a call the strict-keys checker sees"
            )
    for evasion in _EVASIONS.finditer(checked):
        raise UncheckedScript(
            f"{script.name}, line {_line(body, evasion.start()) + 1}: {evasion.group(0)!r} "
            "could hide a call (or the checker's error) from the strict-keys checker"
        )
    # the function's first step takes this call's keys; the copy gets a name of its own
    head_at, registration = _function(body)
    digest = hashlib.sha1((head + body).encode("utf-8"), usedforsecurity=False).hexdigest()[:20]
    function = f"checked_{script.name}_{digest}"
    if coverage:  # the coverage count is a write, in a read-only script too: no flags
        body = body[: registration.start()] + body[registration.start() :].replace(
            "{'no-writes'}", "{}"
        )
        head_at, registration = _function(body)
    body = "".join(
        (
            body[: head_at.end()],
            " __strict_begin(KEYS)",
            body[head_at.end() : registration.start()],
            body[registration.start() :].replace(f"'{script.function}'", f"'{function}'"),
        )
    )
    source = f"#!lua name={function}\n{head}{body}"
    return Script(script.name, source, function, read_only=script.read_only and not coverage)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class StrictRun:
    """Every script of ``store`` replaced by its checked copy, and a record of what ran.

    The swap is of the store's private script table (test-only); every store method and the
    delivery, subscription, endpoint and rate-limit stores built on it after the swap call
    the checked copies. A call with any other script is refused, so a component that cached
    a script before the swap cannot run unchecked unnoticed.
    """

    def __init__(self, store: RedisStore) -> None:
        shipped = dict(store._scripts)
        self.sites = {name: call_sites(s) for name, s in shipped.items()}
        self.scripts = {name: instrument(s, coverage=True) for name, s in shipped.items()}
        self.ran: Counter[str] = Counter()
        self.violations: list[str] = []
        self._store = store
        self._eval = store._eval
        self._cover = f"{store.keys.prefix}:strict-keys-coverage"  # a test's own key
        store._scripts = self.scripts
        store._eval = self._checked_eval  # type: ignore[method-assign]

    async def _checked_eval(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        if self.scripts.get(script.name) is not script:
            self.violations.append(f"{script.name} ran without the strict-keys checker")
            raise AssertionError(self.violations[-1])
        self.ran[script.name] += 1
        try:
            return await self._eval(script, (*keys, self._cover), args)
        except Exception as exc:
            if UNDECLARED in str(exc):
                self.violations.append(str(exc))
            raise

    def missing(self) -> list[str]:
        """The store's scripts that have not run under the checker yet."""
        return [name for name in SCRIPT_NAMES if not self.ran[name]]

    async def unreached(self) -> list[Site]:
        """Call sites that no script ran (a library's site counts once, run by any user)."""
        hits = await self._store.client.hgetall(self._cover)
        ran = {_text(field) for field in hits}
        reached = {
            (s.file, s.offset)
            for sites in self.sites.values()
            for s in sites
            if f"{s.script}:{s.number}" in ran
        }
        out: dict[tuple[str, int], Site] = {}
        for sites in self.sites.values():
            for s in sites:
                if (s.file, s.offset) not in reached:
                    out.setdefault((s.file, s.offset), s)
        return sorted(out.values(), key=lambda s: (s.file, s.offset))

    async def unproven(self) -> list[str]:
        """The sites that never ran and whose keys are not all fixed references, each with
        why: the checker has not seen what they touch."""
        out: list[str] = []
        for site in await self.unreached():
            why = await self._why_unproven(site)
            if why:
                out.append(f"{site}: {why}")
        return out

    async def _why_unproven(self, site: Site) -> str | None:
        # The server tells which arguments are keys: literal arguments go as they are, every
        # other expression as a placeholder naming its position (a key that is a placeholder
        # is that expression).
        argv: list[str] = []
        for i, arg in enumerate(site.args):
            if "unpack" in arg or "..." in arg:
                return "its arguments are built at run time"
            literal = _LITERAL.fullmatch(arg)
            if literal:
                argv.append(next(g for g in literal.groups() if g is not None))
            else:
                argv.append(f"{_PLACEHOLDER}{i}")
        if not argv or argv[0].startswith(_PLACEHOLDER):
            return "its command is chosen at run time"
        if len(argv) == 1:
            return None  # no argument, no key
        try:
            keys = await self._store.client.command_getkeys(*argv)
        except Exception as exc:
            if "no key arguments" in str(exc):
                return None
            return f"the server cannot tell its keys from the text ({exc})"
        for key in map(_text, keys):
            if not key.startswith(_PLACEHOLDER):
                return f"it names the literal key {key!r}"
            expression = site.args[int(key[len(_PLACEHOLDER) :])]
            if not _FIXED_KEY.fullmatch(expression):
                return f"its key {expression} is computed"
        return None
