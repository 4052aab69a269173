"""The ATTNCAP_* switches that take a yes/no value: one spelling rule for all of them."""

from __future__ import annotations

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
ALLOWED = "0, 1, true, false, yes, no, on, off (any case; empty = unset)"
WARM = "warm"  # ATTNCAP_PROBES=warm: probes on, and their libraries imported on first use
PROBES_ALLOWED = "0, 1, true, false, yes, no, on, off, warm (any case; empty = unset)"


class SettingError(ValueError):
    """An ATTNCAP_* variable has a value attncap does not understand; names the variable and the allowed values."""

    def __init__(self, name: str, value: str, allowed: str = ALLOWED):
        self.name, self.value = name, value
        super().__init__(f"{name}={value!r} is invalid: expected one of {allowed}")


def flag(name: str, value: str | None, default: bool) -> bool:
    """The boolean an environment variable spells; `default` when unset or empty, SettingError on anything else."""
    if value is None:
        return default
    word = value.strip().lower()
    if not word:
        return default
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise SettingError(name, value)


def probes_mode(value: str | None, name: str = "ATTNCAP_PROBES") -> str:
    """What ATTNCAP_PROBES spells: "off", "on" (the default: probes answer when their library is imported)
    or "warm" (also import the libraries on the first resolve, as attncap.probes.warm() does)."""
    if value is not None and value.strip().lower() == WARM:
        return WARM
    try:
        return "on" if flag(name, value, True) else "off"
    except SettingError:
        raise SettingError(name, value, PROBES_ALLOWED) from None
