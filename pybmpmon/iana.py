"""IANA code points used by BMP (RFC 7854, 8671, 9069) and BGP (RFC 4271 and friends).

Only numbers and names live here.  Decoders compare against the plain ints (an
``IntEnum`` member is an int), and renderers turn ints into names with
:func:`name_of`, which never fails on a value that is not in the table.
"""

from enum import IntEnum


class BmpMessageType(IntEnum):
    """RFC 7854 §4.1."""

    ROUTE_MONITORING = 0
    STATISTICS_REPORT = 1
    PEER_DOWN = 2
    PEER_UP = 3
    INITIATION = 4
    TERMINATION = 5
    ROUTE_MIRRORING = 6


class PeerType(IntEnum):
    """RFC 7854 §4.2, RFC 9069 §4.1."""

    GLOBAL = 0
    RD_INSTANCE = 1
    LOCAL_INSTANCE = 2
    LOC_RIB = 3


class PeerFlag(IntEnum):
    """Per-peer header flag bits (RFC 7854 §4.2, RFC 8671 §4, RFC 9069 §4.2)."""

    V = 0x80  # IPv6 peer address
    L = 0x40  # post-policy Adj-RIB-In
    A = 0x20  # legacy 2-octet AS_PATH
    O = 0x10  # Adj-RIB-Out (RFC 8671)  # noqa: E741


LOC_RIB_FLAG_F = 0x80  # RFC 9069 §4.2: the Loc-RIB is filtered


class InfoTlvType(IntEnum):
    """Information TLVs of Initiation and Peer Up (RFC 7854 §4.4, RFC 9069 §5)."""

    STRING = 0
    SYS_DESCR = 1
    SYS_NAME = 2
    VRF_TABLE_NAME = 3


class TerminationTlvType(IntEnum):
    """RFC 7854 §4.5."""

    STRING = 0
    REASON = 1


class TerminationReason(IntEnum):
    """RFC 7854 §4.5."""

    ADMINISTRATIVELY_CLOSED = 0
    UNSPECIFIED = 1
    OUT_OF_RESOURCES = 2
    REDUNDANT_CONNECTION = 3
    PERMANENTLY_ADMINISTRATIVELY_CLOSED = 4


class PeerDownReason(IntEnum):
    """RFC 7854 §4.9, RFC 9069 §5 (reason 5), RFC 8671 (reason 6 reserved for it)."""

    LOCAL_NOTIFICATION = 1
    LOCAL_NO_NOTIFICATION = 2
    REMOTE_NOTIFICATION = 3
    REMOTE_NO_NOTIFICATION = 4
    PEER_DE_CONFIGURED = 5
    LOCAL_SYSTEM_CLOSED = 6


class MirroringTlvType(IntEnum):
    """RFC 7854 §4.7."""

    BGP_MESSAGE = 0
    INFORMATION = 1


class MirroringInfoCode(IntEnum):
    """RFC 7854 §4.7."""

    ERRORED_PDU = 0
    MESSAGES_LOST = 1


class StatType(IntEnum):
    """Statistics counter types (RFC 7854 §4.8, RFC 8671 §6, RFC 9069 §6)."""

    REJECTED_BY_POLICY = 0
    DUPLICATE_PREFIX = 1
    DUPLICATE_WITHDRAW = 2
    INVALIDATED_CLUSTER_LIST_LOOP = 3
    INVALIDATED_AS_PATH_LOOP = 4
    INVALIDATED_ORIGINATOR_ID = 5
    INVALIDATED_AS_CONFED_LOOP = 6
    ADJ_RIB_IN_ROUTES = 7
    LOC_RIB_ROUTES = 8
    PER_AFI_SAFI_ADJ_RIB_IN_ROUTES = 9
    PER_AFI_SAFI_LOC_RIB_ROUTES = 10
    UPDATES_TREATED_AS_WITHDRAW = 11
    PREFIXES_TREATED_AS_WITHDRAW = 12
    DUPLICATE_UPDATE = 13
    ADJ_RIB_OUT_PRE_POLICY_ROUTES = 14
    ADJ_RIB_OUT_POST_POLICY_ROUTES = 15
    PER_AFI_SAFI_ADJ_RIB_OUT_PRE_POLICY_ROUTES = 16
    PER_AFI_SAFI_ADJ_RIB_OUT_POST_POLICY_ROUTES = 17


# Counter types whose value is a 64-bit gauge; the rest are 32-bit counters.
STAT_GAUGES = frozenset({7, 8, 9, 10, 14, 15, 16, 17})
# Counter types whose value is preceded by AFI (2) and SAFI (1).
STAT_PER_AFI_SAFI = frozenset({9, 10, 16, 17})


class BgpMessageType(IntEnum):
    """RFC 4271 §4.1, RFC 2918."""

    OPEN = 1
    UPDATE = 2
    NOTIFICATION = 3
    KEEPALIVE = 4
    ROUTE_REFRESH = 5


class AttrType(IntEnum):
    """Path attribute type codes."""

    ORIGIN = 1
    AS_PATH = 2
    NEXT_HOP = 3
    MULTI_EXIT_DISC = 4
    LOCAL_PREF = 5
    ATOMIC_AGGREGATE = 6
    AGGREGATOR = 7
    COMMUNITIES = 8
    ORIGINATOR_ID = 9
    CLUSTER_LIST = 10
    MP_REACH_NLRI = 14
    MP_UNREACH_NLRI = 15
    EXTENDED_COMMUNITIES = 16
    AS4_PATH = 17
    AS4_AGGREGATOR = 18
    PMSI_TUNNEL = 22
    AIGP = 26
    LARGE_COMMUNITIES = 32
    ONLY_TO_CUSTOMER = 35
    ATTR_SET = 128


class AttrFlag(IntEnum):
    """RFC 4271 §4.3."""

    OPTIONAL = 0x80
    TRANSITIVE = 0x40
    PARTIAL = 0x20
    EXTENDED_LENGTH = 0x10


class Origin(IntEnum):
    IGP = 0
    EGP = 1
    INCOMPLETE = 2


class AsPathSegmentType(IntEnum):
    """RFC 4271 §4.3, RFC 5065 §3."""

    AS_SET = 1
    AS_SEQUENCE = 2
    AS_CONFED_SEQUENCE = 3
    AS_CONFED_SET = 4


AS_TRANS = 23456  # RFC 6793


class Afi(IntEnum):
    IPV4 = 1
    IPV6 = 2
    L2VPN = 25


class Safi(IntEnum):
    UNICAST = 1
    MULTICAST = 2
    LABELED_UNICAST = 4
    EVPN = 70
    VPN = 128


class CapabilityCode(IntEnum):
    """BGP capability codes (RFC 5492 registry)."""

    MULTIPROTOCOL = 1
    ROUTE_REFRESH = 2
    OUTBOUND_ROUTE_FILTERING = 3
    EXTENDED_NEXT_HOP = 5
    EXTENDED_MESSAGE = 6
    BGPSEC = 7
    MULTIPLE_LABELS = 8
    ROLE = 9
    GRACEFUL_RESTART = 64
    FOUR_OCTET_AS = 65
    DYNAMIC = 67
    MULTISESSION = 68
    ADD_PATH = 69
    ENHANCED_ROUTE_REFRESH = 70
    LLGR = 71
    FQDN = 73
    BFD = 74
    SOFTWARE_VERSION = 75
    ROUTE_REFRESH_CISCO = 128


class EvpnRouteType(IntEnum):
    """RFC 7432 §7, RFC 9136 §3."""

    ETHERNET_AUTO_DISCOVERY = 1
    MAC_IP_ADVERTISEMENT = 2
    INCLUSIVE_MULTICAST_ETHERNET_TAG = 3
    ETHERNET_SEGMENT = 4
    IP_PREFIX = 5


def name_of(enum: type[IntEnum], value: int) -> str:
    """The lower-case name of *value* in *enum*, or ``unknown_<value>``."""
    try:
        return enum(value).name.lower()
    except ValueError:
        return f"unknown_{value}"
