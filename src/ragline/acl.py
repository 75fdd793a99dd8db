"""Document-level access control: principals, and the store prefilter that enforces them.

A document carries the principals allowed to read it (``user:alice``, ``group:eng``, or
``*`` for everyone with access to the collection). A caller carries its own principals.
A chunk is visible when the two sets meet. The check is a node of the store query itself
(``visible_to``, a prefilter every store renders), so a top-k is never computed over chunks
the caller may not see.
"""

from __future__ import annotations

import re
from typing import Iterable

from ragline.filters import ACL, HasAny

EVERYONE = "*"
# a key holding this principal may create documents whose ACL names none of its own principals
WRITER_ROLE = "role:writer"
_PRINCIPAL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@+\-]{0,127}$")


class ACLError(ValueError):
    """A principal name is malformed."""


def principal(name: str) -> str:
    name = name.strip()
    if name != EVERYONE and not _PRINCIPAL.match(name):
        raise ACLError(f"invalid principal '{name[:60]}': use letters, digits and _ . : @ + - "
                       "(e.g. 'user:alice', 'group:eng'), at most 128 characters, or '*' for everyone")
    return name


def principals(names: Iterable[str]) -> tuple[str, ...]:
    """Validated, de-duplicated and sorted principals."""
    return tuple(sorted({principal(n) for n in names if n.strip()}))


def parse_list(text: str | None) -> tuple[str, ...]:
    """Principals from a comma-separated header or form value."""
    return principals((text or "").split(","))


def visible_to(caller: Iterable[str]) -> HasAny:
    """The prefilter for a caller: documents whose ACL names any of the caller's principals or
    everyone. Principals are validated here, and a store renders them as quoted literals."""
    return HasAny(ACL.name, tuple(sorted({EVERYONE, *principals(caller)})))
