"""``bot4ctl``: the operator's CLI.

    bot4ctl top [--instance NAME]            live read-only view through shared memory
    bot4ctl COMMAND [WORD ...] [key=value ...] [--json]
                                             one command over the daemon's control socket
    e.g.  status | shards | books BTCUSDT | orders | positions | protection | balances | pnl | risk
          limits show | limits set [SYMBOL] KEY VALUE | halt | reduce-only | resume
          cancel-all [SYMBOL] | flatten [SYMBOL] | pause SYMBOL | resume SYMBOL
          reload | journal lag | version | help

Errors from the daemon are printed as the sentences it sends; the exit status is 0 on success,
1 when the daemon refused the command, 2 when it could not be reached.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

DEFAULT_SOCKET = os.environ.get("BOT4D_CONTROL_SOCKET", "/run/bot4d/control.sock")


def _human(v: Any, indent: int = 0) -> str:
    pad = "  " * indent
    if isinstance(v, dict):
        if not v:
            return pad + "(none)"
        w = max(len(str(k)) for k in v)
        out = []
        for k, x in v.items():
            if isinstance(x, (dict, list)) and x:
                out.append(f"{pad}{k}:")
                out.append(_human(x, indent + 1))
            else:
                out.append(f"{pad}{str(k):<{w}}  {x}")
        return "\n".join(out)
    if isinstance(v, list):
        if not v:
            return pad + "(none)"
        return "\n".join(_human(x, indent) if isinstance(x, (dict, list)) else f"{pad}- {x}" for x in v)
    return pad + str(v)


def parse_args(words: list[str]) -> dict[str, str]:
    out = {}
    for w in words:
        k, sep, v = w.partition("=")
        if not sep or not k:
            raise ValueError(f"arguments are key=value, got {w!r}")
        out[k] = v
    return out


def to_request(cmd: str, rest: list[str]) -> tuple[str, dict[str, str]]:
    """The operator's words as a control request: sub-commands and a leading symbol."""
    words = [w for w in rest if "=" not in w]
    args = parse_args([w for w in rest if "=" in w])
    if cmd == "limits":
        sub = words.pop(0) if words else "show"
        if sub == "set":
            cmd = "limits-set"
            if len(words) == 3:
                args["symbol"], args["key"], args["value"] = words
            elif len(words) == 2:
                args["key"], args["value"] = words
            elif words:
                raise ValueError("limits set [SYMBOL] KEY VALUE")
            words = []
        elif sub != "show":
            raise ValueError(f"limits show | limits set [SYMBOL] KEY VALUE, not limits {sub!r}")
    elif cmd == "journal":
        sub = words.pop(0) if words else "lag"
        if sub != "lag":
            raise ValueError(f"journal lag, not journal {sub!r}")
        cmd = "journal-lag"
    elif cmd == "resume" and words:
        cmd = "unpause"  # resume SYMBOL: that instrument's strategy, not the trading state
    if words:
        if len(words) > 1:
            raise ValueError(f"one instrument at a time, got {' '.join(words)!r}")
        args["symbol"] = words[0]
    return cmd, args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    if argv[0] == "top":
        from bot4d.monitor.top import main as top

        return top(argv[1:])
    as_json = "--json" in argv
    argv = [a for a in argv if a != "--json"]
    sock = DEFAULT_SOCKET
    if argv[0].startswith("--socket="):
        sock = argv.pop(0).split("=", 1)[1]
    try:
        cmd, args = to_request(argv[0], argv[1:])
    except ValueError as e:
        print(f"bot4ctl: {e}", file=sys.stderr)
        return 2
    from bot4d.control import call

    try:
        resp = call(sock, cmd, args)
    except (FileNotFoundError, ConnectionRefusedError):
        print(f"bot4ctl: no daemon is listening on {sock} (is bot4d running?)", file=sys.stderr)
        return 2
    except PermissionError:
        print(f"bot4ctl: not allowed to open {sock}", file=sys.stderr)
        return 2
    except (ConnectionError, TimeoutError, OSError) as e:
        print(f"bot4ctl: the daemon did not answer on {sock}: {e}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(resp, indent=2))
    elif resp.get("ok"):
        print(_human(resp.get("result")))
    else:
        print(f"bot4ctl: {resp.get('error')}", file=sys.stderr)
    return 0 if resp.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
