"""BGP messages: header (RFC 4271 §4.1), UPDATE (§4.3, RFC 4760, RFC 4724 §2),
NOTIFICATION (§4.5), KEEPALIVE (§4.4), ROUTE-REFRESH (RFC 2918, RFC 7313).

The UPDATE decoder is the hot path of the whole station: a full table is about
half a million UPDATEs.  It walks the attribute block once to find the TLV
boundaries, then takes the decoded :class:`Attributes` from the context's cache
when the same attribute bytes were seen before (routers group prefixes by
attributes, and the pre-policy, post-policy and Loc-RIB copies of a route share
them), and only decodes on a miss.

When the optional C extension ``pybmpmon._fastpath`` is built, it decodes the
common well-formed UPDATE first; :func:`decode_update_python` remains the
reference and handles everything the extension declines.
"""

from __future__ import annotations

import os
from struct import unpack_from

from pybmpmon.bgp.attributes import build_attributes
from pybmpmon.bgp.model import (
    EMPTY_ATTRIBUTES,
    FAMILY_NAMES,
    Attributes,
    BgpContext,
    Keepalive,
    Nlri,
    Notification,
    RouteRefresh,
    RouteSet,
    UnknownBgpMessage,
    Update,
)
from pybmpmon.bgp.nlri import decode_ipv4, decode_mp_reach, decode_mp_unreach
from pybmpmon.bgp.open import decode_open
from pybmpmon.errors import BgpError
from pybmpmon.iana import AsPathSegmentType, Origin

MARKER = b"\xff" * 16
HEADER_SIZE = 19

# RFC 4271 §6.1 and §6.3 error subcodes used below.
_HEADER_ERROR = 1
_BAD_MARKER = 1
_BAD_LENGTH = 2
_BAD_TYPE = 3
_UPDATE_ERROR = 3
_MALFORMED_ATTRIBUTE_LIST = 1
_ATTRIBUTE_LENGTH_ERROR = 5
_INVALID_NETWORK_FIELD = 10

_IPV4_UNICAST = (1, 1)
_new = tuple.__new__


def decode_bgp_message(data: bytes, offset: int, end: int, ctx: BgpContext) -> tuple:
    """Decode the BGP message at ``data[offset:]``; return it and the offset after it."""
    if end - offset < HEADER_SIZE:
        raise BgpError(
            "BGP message shorter than its 19-octet header", offset, _HEADER_ERROR, _BAD_LENGTH
        )
    if not data.startswith(MARKER, offset):
        raise BgpError("BGP header marker is not all ones", offset, _HEADER_ERROR, _BAD_MARKER)
    length, msg_type = unpack_from("!HB", data, offset + 16)
    msg_end = offset + length
    if length < HEADER_SIZE or msg_end > end:
        raise BgpError(
            f"BGP message length {length} does not fit in the {end - offset} octets available",
            offset + 16,
            _HEADER_ERROR,
            _BAD_LENGTH,
        )
    body = offset + HEADER_SIZE
    if msg_type == 2:
        return decode_update(data, body, msg_end, ctx), msg_end
    if msg_type == 1:
        return decode_open(data, body, msg_end), msg_end
    if msg_type == 3:
        return decode_notification(data, body, msg_end), msg_end
    if msg_type == 4:
        if length != HEADER_SIZE:
            raise BgpError(f"KEEPALIVE of length {length}", offset + 16, _HEADER_ERROR, _BAD_LENGTH)
        return Keepalive(), msg_end
    if msg_type == 5:
        if length != HEADER_SIZE + 4:
            raise BgpError(
                f"ROUTE-REFRESH of length {length}", offset + 16, _HEADER_ERROR, _BAD_LENGTH
            )
        afi, subtype, safi = unpack_from("!HBB", data, body)
        return RouteRefresh(afi, safi, subtype), msg_end
    return UnknownBgpMessage(msg_type, bytes(data[body:msg_end])), msg_end


def decode_notification(data: bytes, start: int, end: int) -> Notification:
    """NOTIFICATION body: error code, subcode, data (RFC 4271 §4.5)."""
    if end - start < 2:
        raise BgpError("NOTIFICATION shorter than 2 octets", start, _HEADER_ERROR, _BAD_LENGTH)
    return Notification(data[start], data[start + 1], bytes(data[start + 2 : end]))


_FASTPATH_API = 2  # the API_VERSION of pybmpmon/_fastpath.c this module calls


def bind_fastpath(module):
    """*module*'s decode_update, configured with this package's model types and
    constants, or None when it is a build for other arguments or other types."""
    if getattr(module, "API_VERSION", None) != _FASTPATH_API:
        return None
    try:
        module.configure(
            Update, RouteSet, Nlri, Attributes, EMPTY_ATTRIBUTES,
            (Origin.IGP, Origin.EGP, Origin.INCOMPLETE),
            (AsPathSegmentType.AS_SET, AsPathSegmentType.AS_SEQUENCE,
             AsPathSegmentType.AS_CONFED_SEQUENCE, AsPathSegmentType.AS_CONFED_SET),
            FAMILY_NAMES[(1, 1)], FAMILY_NAMES[(2, 1)],
        )  # fmt: skip
    except (TypeError, ValueError):
        return None  # a stale build against another model: stay correct, not fast
    return module.decode_update


def _load_fastpath():
    """The C accelerator's decode_update, or None.

    ``pybmpmon._fastpath`` is optional (see setup.py): without it, or with
    PYBMPMON_PURE_PYTHON=1 in the environment (for tests and debugging), every
    UPDATE takes the Python decoder below, which stays the reference.
    """
    if os.environ.get("PYBMPMON_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from pybmpmon import _fastpath
    except ImportError:
        return None
    return bind_fastpath(_fastpath)


_fast_decode_update = _load_fastpath()
FASTPATH = _fast_decode_update is not None  # whether decode_update uses the accelerator


def decode_update(data: bytes, start: int, end: int, ctx: BgpContext) -> Update:
    """Decode an UPDATE body (the octets after the 19-octet header).

    Strategy: the C accelerator, when built, decodes the common well-formed
    UPDATE and returns None for anything else; :func:`decode_update_python`
    then gives the exact result or the precise error.  Both read and fill
    ``ctx.cache`` the same way.
    """
    if _fast_decode_update is not None:
        update = _fast_decode_update(
            data, start, end, ctx.cache, ctx.four_octet_as, ctx.add_path, ctx.cache_limit
        )
        if update is not None:
            return update
    return decode_update_python(data, start, end, ctx)


def decode_update_python(data: bytes, start: int, end: int, ctx: BgpContext) -> Update:
    """Decode an UPDATE body in Python: the reference for ``pybmpmon._fastpath``."""
    if end > len(data):
        raise BgpError(
            "UPDATE runs past the buffer", start, _UPDATE_ERROR, _MALFORMED_ATTRIBUTE_LIST
        )
    if end - start < 4:
        raise BgpError(
            "UPDATE shorter than 4 octets", start, _UPDATE_ERROR, _MALFORMED_ATTRIBUTE_LIST
        )
    withdrawn_end = start + 2 + ((data[start] << 8) | data[start + 1])
    if withdrawn_end + 2 > end:
        raise BgpError(
            "withdrawn routes length runs past the UPDATE",
            start,
            _UPDATE_ERROR,
            _MALFORMED_ATTRIBUTE_LIST,
        )
    attr_start = withdrawn_end + 2
    attr_end = attr_start + ((data[withdrawn_end] << 8) | data[withdrawn_end + 1])
    if attr_end > end:
        raise BgpError(
            "total path attribute length runs past the UPDATE",
            withdrawn_end,
            _UPDATE_ERROR,
            _MALFORMED_ATTRIBUTE_LIST,
        )
    add_path = ctx.add_path
    if type(data) is not bytes:
        data = bytes(data)  # decode_ipv4 and the cache keys need bytes

    withdrawn: tuple = ()
    if withdrawn_end > start + 2:
        nlri = decode_ipv4(data, start + 2, withdrawn_end, _IPV4_UNICAST in add_path)
        withdrawn = (_new(RouteSet, (1, 1, "ipv4_unicast", None, nlri, None, None)),)

    attributes = EMPTY_ATTRIBUTES
    mp_reach = mp_unreach = None
    only_mp_unreach = False
    if attr_end > attr_start:
        # Strategy: walk the TLV headers only; MP_REACH/MP_UNREACH carry the
        # routes themselves, so they are cut out of the cache key.
        pos = attr_start
        cut = []
        count = 0
        while pos < attr_end:
            if pos + 3 > attr_end:
                raise BgpError(
                    "truncated path attribute header", pos, _UPDATE_ERROR, _ATTRIBUTE_LENGTH_ERROR
                )
            flags = data[pos]
            code = data[pos + 1]
            if flags & 0x10:
                if pos + 4 > attr_end:
                    raise BgpError(
                        "truncated path attribute header",
                        pos,
                        _UPDATE_ERROR,
                        _ATTRIBUTE_LENGTH_ERROR,
                    )
                value = pos + 4
                value_end = value + ((data[pos + 2] << 8) | data[pos + 3])
            else:
                value = pos + 3
                value_end = value + data[pos + 2]
            if value_end > attr_end:
                raise BgpError(
                    f"path attribute {code} length runs past the attribute block",
                    pos,
                    _UPDATE_ERROR,
                    _ATTRIBUTE_LENGTH_ERROR,
                )
            if code == 14 or code == 15:
                if (mp_reach if code == 14 else mp_unreach) is not None:
                    raise BgpError(
                        f"path attribute {code} appears twice",
                        pos,
                        _UPDATE_ERROR,
                        _MALFORMED_ATTRIBUTE_LIST,
                    )
                if code == 14:
                    mp_reach = (value, value_end)
                else:
                    mp_unreach = (value, value_end)
                cut.append((pos, value_end))
            count += 1
            pos = value_end
        # The key is also the set's Attributes.wire: the AS width first, as
        # the same octets decode differently in a 2-octet AS session.
        width = b"\x01" if ctx.four_octet_as else b"\x00"
        if cut:
            only_mp_unreach = count == 1 and mp_unreach is not None
            key = _without(data, attr_start, attr_end, cut, width)
        else:
            key = width + data[attr_start:attr_end]
        if len(key) > 1:
            cache = ctx.cache
            attributes = cache.get(key)
            if attributes is None:
                attributes = build_attributes(
                    _attribute_items(data, attr_start, attr_end), ctx.four_octet_as, key
                )
                if len(cache) >= ctx.cache_limit:
                    cache.clear()
                cache[key] = attributes

    announced: tuple = ()
    if mp_reach is not None:
        announced = (decode_mp_reach(data, mp_reach[0], mp_reach[1], add_path),)
    if attr_end < end:
        nlri = decode_ipv4(data, attr_end, end, _IPV4_UNICAST in add_path)
        announced += (
            _new(RouteSet, (1, 1, "ipv4_unicast", attributes.next_hop, nlri, None, None)),
        )
    end_of_rib = None
    if mp_unreach is not None:
        unreach = decode_mp_unreach(data, mp_unreach[0], mp_unreach[1], add_path)
        if unreach.nlri or unreach.raw:
            withdrawn += (unreach,)
        elif only_mp_unreach and not withdrawn and not announced:
            end_of_rib = unreach.afi_safi
    elif end == start + 4:
        end_of_rib = "ipv4_unicast"
    return _new(Update, (attributes, announced, withdrawn, end_of_rib))


def _without(data: bytes, start: int, end: int, cut: list, head: bytes) -> bytes:
    """*head* + ``data[start:end]`` without the (from, to) ranges in *cut* (ordered)."""
    parts = [head]
    pos = start
    for cut_from, cut_to in cut:
        parts.append(data[pos:cut_from])
        pos = cut_to
    parts.append(data[pos:end])
    return b"".join(parts)


def _attribute_items(data: bytes, start: int, end: int) -> list:
    """(code, flags, value, value offset) of each attribute but MP_REACH/MP_UNREACH.

    Runs only on a cache miss, after the caller's walk checked every length.
    """
    items = []
    pos = start
    while pos < end:
        flags = data[pos]
        code = data[pos + 1]
        if flags & 0x10:
            value = pos + 4
            value_end = value + ((data[pos + 2] << 8) | data[pos + 3])
        else:
            value = pos + 3
            value_end = value + data[pos + 2]
        if code != 14 and code != 15:
            items.append((code, flags, bytes(data[value:value_end]), value))
        pos = value_end
    return items
