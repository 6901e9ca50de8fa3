"""BGP OPEN message body and its capabilities.

Implements RFC 4271 §4.2 (OPEN), RFC 5492 (capabilities optional parameter,
several capabilities per parameter allowed), RFC 9072 (extended optional
parameters length), and the capability values of RFC 4760 §8 (multiprotocol),
RFC 2918 / RFC 7313 (route refresh, enhanced), RFC 6793 (four-octet AS),
RFC 7911 §4 (Add-Path), RFC 4724 §3 (graceful restart), RFC 8950 §3 (extended
next hop), RFC 8654 (extended message), RFC 9494 (long-lived graceful
restart, kept raw), RFC 9234 §4.1 (BGP role), draft-walton-bgp-hostname
(FQDN) and draft-abraitis-bgp-version-capability (software version).
"""

from __future__ import annotations

from pybmpmon.bgp.model import Capability, Open
from pybmpmon.errors import BgpError, ContentError
from pybmpmon.reader import Reader

OPT_PARAM_CAPABILITIES = 2  # RFC 5492 §4
_EXTENDED_PARAMS = 255  # RFC 9072 §2: both the length and the first type are 255

# NOTIFICATION code 2 = OPEN Message Error (RFC 4271 §6.2); subcode 0 unspecific.
_OPEN_ERROR = 2


def decode_open(data, start: int, end: int) -> Open:
    """Decode the OPEN body ``data[start:end]`` (after the 19-byte BGP header).

    Raises :class:`BgpError` (code 2) for a body whose optional parameters do
    not fit the declared lengths.  Offsets are indexes into *data*.
    """
    try:
        return _decode_open(Reader(data, start, end))
    except BgpError:
        raise
    except ContentError as exc:
        raise BgpError(f"OPEN: {exc.message}", exc.offset, _OPEN_ERROR, 0) from None


def _decode_open(r: Reader) -> Open:
    version = r.u8("OPEN version")
    my_as = r.u16("OPEN my AS")
    hold_time = r.u16("OPEN hold time")
    bgp_id = ".".join(str(b) for b in r.take(4, "OPEN BGP identifier"))
    length_at = r.pos
    params_len = r.u8("OPEN optional parameters length")
    extended = False
    if params_len == _EXTENDED_PARAMS and r.remaining >= 1 and r.data[r.pos] == _EXTENDED_PARAMS:
        # RFC 9072 §2: a Non-Ext OP Type of 255 announces a 2-octet length
        # field, and every parameter then has a 2-octet length too.
        length_at = r.skip(1) + 1
        params_len = r.u16("OPEN extended optional parameters length")
        extended = True
    if params_len != r.remaining:
        raise BgpError(
            f"OPEN optional parameters length {params_len} but {r.remaining} bytes follow",
            length_at,
            _OPEN_ERROR,
            0,
        )
    capabilities: list[Capability] = []
    other: list[tuple[int, bytes]] = []
    while not r.at_end():
        ptype = r.u8("optional parameter type")
        plen = r.u16("optional parameter length") if extended else r.u8("optional parameter length")
        param = r.sub(plen, "optional parameter")
        if ptype == OPT_PARAM_CAPABILITIES:
            while not param.at_end():
                capabilities.append(_decode_capability(param))
        else:
            other.append((ptype, param.rest()))
    return Open(version, my_as, hold_time, bgp_id, tuple(capabilities), tuple(other))


def _decode_capability(r: Reader) -> Capability:
    code = r.u8("capability code")
    length = r.u8("capability length")
    start = r.pos
    raw = r.take(length, "capability value")
    decoder = _DECODERS.get(code)
    if decoder is None:
        return Capability(code, raw, None)
    try:
        value = decoder(raw)
    except (ValueError, IndexError) as exc:
        # Strategy: the capabilities that change how UPDATEs are parsed
        # (multiprotocol, four-octet AS, Add-Path, extended next hop) must be
        # right or the whole session would be misread, so a bad one fails the
        # OPEN.  The informational ones (hostname, graceful restart, ...) keep
        # their raw bytes with no value instead.
        if code in _STRICT:
            raise BgpError(f"capability {code}: {exc}", start, _OPEN_ERROR, 0) from None
        value = None
    return Capability(code, raw, value)


def _exact(raw: bytes, size: int, name: str) -> None:
    if len(raw) != size:
        raise ValueError(f"{name} value is {len(raw)} bytes, expected {size}")


def _multiple(raw: bytes, size: int, name: str) -> None:
    if len(raw) % size:
        raise ValueError(f"{name} value is {len(raw)} bytes, not a multiple of {size}")


def _multiprotocol(raw: bytes) -> tuple:
    # RFC 4760 §8: AFI (2), reserved (1), SAFI (1).
    _exact(raw, 4, "multiprotocol")
    return (int.from_bytes(raw[0:2], "big"), raw[3])


def _four_octet_as(raw: bytes) -> int:
    _exact(raw, 4, "four-octet AS")
    return int.from_bytes(raw, "big")


def _add_path(raw: bytes) -> tuple:
    # RFC 7911 §4: AFI (2), SAFI (1), Send/Receive (1), repeated.
    _multiple(raw, 4, "Add-Path")
    return tuple(
        (int.from_bytes(raw[i : i + 2], "big"), raw[i + 2], raw[i + 3])
        for i in range(0, len(raw), 4)
    )


def _extended_next_hop(raw: bytes) -> tuple:
    # RFC 8950 §3: NLRI AFI (2), NLRI SAFI (2), next hop AFI (2), repeated.
    _multiple(raw, 6, "extended next hop")
    return tuple(
        (
            int.from_bytes(raw[i : i + 2], "big"),
            int.from_bytes(raw[i + 2 : i + 4], "big"),
            int.from_bytes(raw[i + 4 : i + 6], "big"),
        )
        for i in range(0, len(raw), 6)
    )


def _graceful_restart(raw: bytes) -> dict:
    # RFC 4724 §3: restart flags (4 bits) and time (12 bits), then
    # AFI (2), SAFI (1), flags (1) per family.
    if len(raw) < 2 or (len(raw) - 2) % 4:
        raise ValueError(f"graceful restart value is {len(raw)} bytes")
    head = int.from_bytes(raw[0:2], "big")
    families = tuple(
        (int.from_bytes(raw[i : i + 2], "big"), raw[i + 2], raw[i + 3])
        for i in range(2, len(raw), 4)
    )
    return {"restart_time": head & 0x0FFF, "flags": head >> 12, "families": families}


def _length_prefixed_text(raw: bytes, pos: int, name: str) -> tuple[str, int]:
    if pos >= len(raw):
        raise ValueError(f"{name} length missing")
    size = raw[pos]
    end = pos + 1 + size
    if end > len(raw):
        raise ValueError(f"{name} of {size} bytes overruns the capability")
    return raw[pos + 1 : end].decode("utf-8", errors="replace"), end


def _fqdn(raw: bytes) -> tuple:
    # draft-walton-bgp-hostname §2: hostname length, hostname, domain length, domain.
    hostname, pos = _length_prefixed_text(raw, 0, "hostname")
    domain, pos = _length_prefixed_text(raw, pos, "domain name")
    if pos != len(raw):
        raise ValueError("bytes after the domain name")
    return (hostname, domain)


def _software_version(raw: bytes) -> str:
    text, pos = _length_prefixed_text(raw, 0, "software version")
    if pos != len(raw):
        raise ValueError("bytes after the software version")
    return text


def _role(raw: bytes) -> int:
    _exact(raw, 1, "BGP role")
    return raw[0]


_DECODERS = {
    1: _multiprotocol,
    5: _extended_next_hop,
    9: _role,
    64: _graceful_restart,
    65: _four_octet_as,
    69: _add_path,
    73: _fqdn,
    75: _software_version,
}
_STRICT = frozenset({1, 5, 65, 69})
