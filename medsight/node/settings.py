"""The DICOM node's settings: this workstation's AE (title, port, listening address) and the remote nodes."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from medsight.config import Settings

LOOPBACK = "127.0.0.1"
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE VR: 16 printable chars, no backslash
_REMOTE = re.compile(r"^\s*(?P<ae>[^@]{1,16})@(?P<host>[^:\s]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})\s*$")


def check_ae_title(title: str) -> str:
    """`title` stripped, or ValueError when it is not a valid AE title (1-16 printable characters, no "\\")."""
    title = str(title or "").strip()
    if not _AE_TITLE.match(title):
        raise ValueError(f"{title!r} is not a valid AE title: use 1 to 16 letters, digits or spaces, no backslash.")
    return title


def check_port(port: int | str) -> int:
    """`port` as an int, or ValueError when it is outside 1-65535."""
    value = int(port)
    if not 0 < value < 65536:
        raise ValueError(f"Port {value} is outside 1-65535.")
    return value


@dataclass(frozen=True)
class RemoteNode:
    """A remote DICOM node (a PACS or another workstation)."""

    ae_title: str
    host: str
    port: int

    def __post_init__(self):
        object.__setattr__(self, "ae_title", check_ae_title(self.ae_title))
        object.__setattr__(self, "port", check_port(self.port))
        if not self.host.strip():
            raise ValueError("A remote node needs a host name or address.")

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> "RemoteNode":
        """Read "AE@host:port" (e.g. "PACS@10.0.0.5:104")."""
        match = _REMOTE.match(str(text or ""))
        if not match:
            raise ValueError(f"{str(text)[:80]!r} is not a remote node; write it as AE@host:port, e.g. PACS@10.0.0.5:104.")
        return cls(match["ae"].strip(), match["host"].strip("[]"), int(match["port"]))


def parse_remotes(text: str) -> list[RemoteNode]:
    """Remote nodes from "AE@host:port" entries separated by ";", "," or new lines (invalid ones raise)."""
    return [RemoteNode.parse(part) for part in re.split(r"[;,\n]", text or "") if part.strip()]


def is_loopback(address: str) -> bool:
    """True when `address` only accepts connections from this computer."""
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip()).is_loopback
    except ValueError:
        return False


def bind_warning(address: str) -> str | None:
    """A warning when the receiver would listen beyond this computer, else None."""
    if is_loopback(address):
        return None
    return (f"The DICOM receiver listens on {address}, so other computers on the network can send to it. DICOM "
            "has no passwords: any device that knows the AE title and port can deliver studies. Allow this only "
            "on a protected hospital network, behind a firewall limited to your PACS.")


@dataclass(frozen=True)
class NodeSettings:
    """Everything the DICOM node needs, taken from the workstation `Settings` (overridable per start)."""

    ae_title: str = "MEDSIGHT"
    port: int = 11112
    bind: str = LOOPBACK
    remotes: tuple[RemoteNode, ...] = ()
    auto_analyse: bool = False
    user: str = ""

    def __post_init__(self):
        object.__setattr__(self, "ae_title", check_ae_title(self.ae_title))
        object.__setattr__(self, "port", check_port(self.port) if self.port else 0)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides) -> "NodeSettings":
        """The node settings of `settings`, with any field replaced by a non-None keyword."""
        values = dict(ae_title=settings.node_ae_title, port=settings.node_port, bind=settings.node_bind,
                      remotes=tuple(parse_remotes(settings.node_remotes)), auto_analyse=settings.node_auto_analyse,
                      user=settings.node_user)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def warning(self) -> str | None:
        return bind_warning(self.bind)


def receiving_user(settings: Settings, wanted: str = "") -> str:
    """The account that owns received studies: `wanted` or `settings.node_user` if set, else the first administrator
    (alphabetically).

    Raises:
        ValueError: when that account does not exist or the workstation has no account yet.
    """
    from medsight.auth import UserStore

    store = UserStore(settings.users_path)
    name = (wanted or settings.node_user).strip().lower()
    if name:
        if store.get(name) is None:
            raise ValueError(f"The receiving account {name!r} does not exist; create it or choose another one.")
        return name
    # The accounts file keeps no creation order, so "first" is alphabetical: stable, and on a workstation
    # with one administrator (the usual case) it is the account created at first start.
    admins = store.admins()
    if not admins:
        raise ValueError("No account exists yet: start the app once (it creates the first administrator), "
                         "then start the DICOM receiver.")
    return admins[0]
