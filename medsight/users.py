"""Manage workstation accounts from the terminal.

    python -m medsight.users list
    python -m medsight.users add NAME [--display-name "Dr A. Example"] [--admin] [--generate | --password-stdin]
    python -m medsight.users reset NAME [--generate | --password-stdin]
    python -m medsight.users unlock NAME
    python -m medsight.users roles NAME [--grant ROLE] [--revoke ROLE]

Roles are `admin` (System page administration, user management, the full audit log) and `radiologist`
(reading studies; their own audit trail). The first account of a workstation is always an admin, and the
last admin cannot lose the role. Passwords are never taken as command-line arguments (they would show in
the process list). Without `--generate` or `--password-stdin` the password is asked for twice on the
terminal. `reset` also lifts a sign-in pause. Accounts live in `$MEDSIGHT_HOME/users.yaml`.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from medsight.auth import ADMIN, RADIOLOGIST, ROLES, Authenticator, UserStore, generate_password, normalise_username
from medsight.config import get_settings
from medsight.storage import History


def _read_password(args: argparse.Namespace) -> tuple[str, bool]:
    """Return (password, generated)."""
    if args.generate:
        return generate_password(), True
    if args.password_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n"), False
    if not sys.stdin.isatty():
        raise SystemExit("No terminal to ask for a password: use --password-stdin or --generate.")
    first = getpass.getpass("New password: ")
    second = getpass.getpass("Repeat password: ")
    if first != second:
        raise SystemExit("The two passwords differ; nothing changed.")
    return first, False


def _add_password_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--generate", action="store_true", help="create a random password and print it once")
    group.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m medsight.users", description="Manage MedSight Workstation accounts.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list accounts and their lockout state")
    add = sub.add_parser("add", help="create an account")
    add.add_argument("username")
    add.add_argument("--display-name", default="", help="name shown in the app (default: the user name)")
    add.add_argument("--admin", action="store_true", help="also give the account the admin role")
    _add_password_options(add)
    reset = sub.add_parser("reset", help="set a new password (also lifts a lockout)")
    reset.add_argument("username")
    _add_password_options(reset)
    unlock = sub.add_parser("unlock", help="lift a sign-in pause after failed sign-ins")
    unlock.add_argument("username")
    roles = sub.add_parser("roles", help="show or change an account's roles")
    roles.add_argument("username")
    roles.add_argument("--grant", action="append", default=[], choices=ROLES, help="add a role (repeatable)")
    roles.add_argument("--revoke", action="append", default=[], choices=ROLES, help="remove a role (repeatable)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    settings = get_settings().ensure_dirs()
    history = History(settings.db_path)
    store = UserStore(settings.users_path)
    auth = Authenticator(settings, history)
    try:
        if args.command == "list":
            accounts = store.users()
            if not accounts:
                print(f"No accounts in {settings.users_path}. The app creates one on first start.")
                return 0
            print(f"{'user':<20} {'name':<28} {'roles':<22} status")
            for name, entry in sorted(accounts.items()):
                until = auth.locked_until(name)
                status = f"paused until {until:%Y-%m-%d %H:%M} UTC" if until else (
                    f"{auth.failed_attempts(name)} recent failed sign-ins" if auth.failed_attempts(name) else "active")
                roles = ",".join(entry.get("roles") or [])
                print(f"{name:<20} {UserStore.display_name(entry, name):<28} {roles:<22} {status}")
            return 0
        if args.command == "unlock":
            name = normalise_username(args.username)
            if store.get(name) is None:
                print(f"No account named {name!r}.", file=sys.stderr)
                return 1
            auth.unlock(name)
            print(f"Unlocked {name}.")
            return 0
        if args.command == "roles":
            name = normalise_username(args.username)
            current = store.roles(name) if store.get(name) is not None else None
            if current is None:
                print(f"No account named {name!r}.", file=sys.stderr)
                return 1
            if args.grant or args.revoke:
                wanted = (set(current) | set(args.grant)) - set(args.revoke)
                current = store.set_roles(name, tuple(wanted))
                history.audit(name, "roles_changed", {"roles": list(current), "by": "command line"})
            print(f"{name}: {', '.join(current)}")
            return 0
        password, generated = _read_password(args)
        if args.command == "add":
            roles = (RADIOLOGIST, ADMIN) if args.admin else (RADIOLOGIST,)
            name = store.add(args.username, password, name=args.display_name, roles=roles)
            history.audit(name, "account_added", {"via": "command line", "roles": list(store.roles(name))})
            print(f"Created account {name} ({', '.join(store.roles(name))}).")
        else:  # reset
            name = normalise_username(args.username)
            store.set_password(name, password)
            auth.unlock(name)
            history.audit(name, "password_reset", {"via": "command line"})
            print(f"New password set for {name}.")
        if generated:
            print(f"Password (shown only this once): {password}")
        return 0
    except (ValueError, KeyError) as exc:
        message = exc.args[0] if exc.args else str(exc)
        print(f"Error: {message}", file=sys.stderr)
        return 1
    finally:
        history.close()


if __name__ == "__main__":
    sys.exit(main())
