"""The SQL statements of the writer, built once at import.

The schema itself lives in migrations/; this module holds what the writer runs
per batch.  Route rows arrive by COPY in a per-connection temporary table
(``stage``), then go to route_updates (history) and route_state (current
state) with set-based statements.
"""

# Per-route fields that describe the path (kept in route_state when a
# withdrawal arrives, NULL in a withdrawal's history row).
ATTRIBUTE_COLUMNS = (
    "next_hop", "origin", "as_path", "origin_as", "med", "local_pref", "communities",
    "large_communities", "ext_communities", "atomic_aggregate", "aggregator",
    "originator_id", "cluster_list", "labels",
)
EVPN_COLUMNS = ("evpn_route_type", "evpn_esi", "evpn_ethernet_tag", "evpn_mac", "evpn_ip",
                "evpn_gateway")

CREATE_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS stage (
    gen smallint NOT NULL,
    time double precision NOT NULL,
    sref smallint NOT NULL,
    nlri text,
    prefix cidr,
    path_id bigint NOT NULL,
    rd text,
    is_withdrawn boolean NOT NULL,
    attr_hash bigint,
    next_hop inet,
    origin text,
    as_path bigint[],
    origin_as bigint,
    med bigint,
    local_pref bigint,
    communities text[],
    large_communities text[],
    ext_communities text[],
    atomic_aggregate boolean,
    aggregator text,
    originator_id inet,
    cluster_list inet[],
    labels integer[],
    evpn_route_type smallint,
    evpn_esi text,
    evpn_ethernet_tag bigint,
    evpn_mac text,
    evpn_ip inet,
    evpn_gateway inet
)
"""

# The scopes of the routes in the stage: sref is what the lines carry.
CREATE_STAGE_SCOPES = """
CREATE TEMP TABLE IF NOT EXISTS stage_scopes (
    sref smallint PRIMARY KEY,
    scope_id integer NOT NULL,
    router_ip inet NOT NULL,
    peer_ip inet NOT NULL,
    peer_rd text NOT NULL,
    peer_asn bigint,
    rib text NOT NULL,
    afi_safi text NOT NULL
)
"""

COPY_STAGE = "COPY stage FROM STDIN"
TRUNCATE_STAGE = "TRUNCATE stage, stage_scopes"

FILL_STAGE_SCOPES = (
    "INSERT INTO stage_scopes SELECT v.sref, c.scope_id, c.router_ip, c.peer_ip, c.peer_rd, "
    "v.peer_asn, c.rib, c.afi_safi FROM (VALUES %s) AS v(sref, router_ip, peer_ip, peer_rd, "
    "rib, afi_safi, peer_asn) JOIN route_scopes c ON c.router_ip = v.router_ip "
    "AND c.peer_ip = v.peer_ip AND c.peer_rd = v.peer_rd AND c.rib = v.rib "
    "AND c.afi_safi = v.afi_safi"
)
FILL_STAGE_SCOPES_TEMPLATE = "(%s::smallint, %s::inet, %s::inet, %s, %s, %s, %s::bigint)"

# nlri is NULL in the stage for plain unicast routes: the key is then the
# prefix's canonical text, as PostgreSQL prints it.  (The decoder clears host
# bits, so prefixes are valid cidr values; a bad one fails the COPY and is
# isolated by the writer.)
_NLRI = "coalesce(s.nlri, s.prefix::text)"
_PREFIX = "s.prefix"

_HISTORY_COLUMNS = ("time, router_ip, peer_ip, peer_rd, peer_asn, rib, afi_safi, nlri, prefix, "
                    "path_id, rd, is_withdrawn, " + ", ".join(ATTRIBUTE_COLUMNS + EVPN_COLUMNS))

INSERT_HISTORY = (
    f"INSERT INTO route_updates ({_HISTORY_COLUMNS}) "
    f"SELECT to_timestamp(s.time), c.router_ip, c.peer_ip, c.peer_rd, c.peer_asn, c.rib, "
    f"c.afi_safi, {_NLRI}, {_PREFIX}, s.path_id, s.rd, s.is_withdrawn, "
    + ", ".join(f"s.{c}" for c in ATTRIBUTE_COLUMNS + EVPN_COLUMNS)
    + " FROM stage s JOIN stage_scopes c ON c.sref = s.sref"
)

ENSURE_SCOPES = (
    "INSERT INTO route_scopes (router_ip, peer_ip, peer_rd, rib, afi_safi) "
    "VALUES %s ON CONFLICT DO NOTHING"
)

_STATE_INSERT_COLUMNS = (
    "scope_id, router_ip, peer_ip, peer_rd, rib, afi_safi, nlri, path_id, peer_asn, prefix, rd, "
    "is_withdrawn, " + ", ".join(ATTRIBUTE_COLUMNS + EVPN_COLUMNS)
    + ", attr_hash, first_seen, last_seen, last_change, learn_count, withdraw_count"
)


def _attribute_update(column: str) -> str:
    return (f"{column} = CASE WHEN EXCLUDED.is_withdrawn THEN route_state.{column} "
            f"ELSE EXCLUDED.{column} END")


# One statement per generation (see rows.py): each key occurs once in it, so
# ON CONFLICT sees the previous state, including what the earlier generation
# of the same batch wrote.
#   - a withdrawal keeps the latest attributes, sets is_withdrawn;
#   - last_change moves when the withdrawn flag flips or, for an
#     announcement, when the attributes differ;
#   - change_count counts UPDATE-driven changes (see the migration).
UPSERT_STATE = (
    f"INSERT INTO route_state ({_STATE_INSERT_COLUMNS}) "
    f"SELECT c.scope_id, c.router_ip, c.peer_ip, c.peer_rd, c.rib, c.afi_safi, {_NLRI}, "
    f"s.path_id, c.peer_asn, {_PREFIX}, s.rd, s.is_withdrawn, "
    + ", ".join(f"s.{c}" for c in ATTRIBUTE_COLUMNS + EVPN_COLUMNS)
    + ", s.attr_hash, to_timestamp(s.time), to_timestamp(s.time), to_timestamp(s.time), "
    "(NOT s.is_withdrawn)::int, s.is_withdrawn::int "
    "FROM stage s JOIN stage_scopes c ON c.sref = s.sref "
    "WHERE s.gen = %s "
    "ON CONFLICT (scope_id, nlri, path_id) DO UPDATE SET "
    "peer_asn = EXCLUDED.peer_asn, "
    "is_withdrawn = EXCLUDED.is_withdrawn, "
    "stale = false, "
    "cause = NULL, "
    + ", ".join(_attribute_update(c) for c in ATTRIBUTE_COLUMNS + ("attr_hash",))
    + ", "
    + ", ".join(f"{c} = coalesce(EXCLUDED.{c}, route_state.{c})" for c in EVPN_COLUMNS)
    + ", last_seen = EXCLUDED.last_seen, "
    "last_change = CASE WHEN route_state.is_withdrawn <> EXCLUDED.is_withdrawn "
    "OR (NOT EXCLUDED.is_withdrawn AND route_state.attr_hash IS DISTINCT FROM EXCLUDED.attr_hash) "
    "THEN EXCLUDED.last_seen ELSE route_state.last_change END, "
    "learn_count = route_state.learn_count + EXCLUDED.learn_count, "
    "withdraw_count = route_state.withdraw_count + EXCLUDED.withdraw_count, "
    "change_count = route_state.change_count + CASE "
    "WHEN EXCLUDED.is_withdrawn THEN (NOT route_state.is_withdrawn)::int "
    "ELSE ((route_state.is_withdrawn AND route_state.cause IS NULL) "
    "OR route_state.attr_hash IS DISTINCT FROM EXCLUDED.attr_hash)::int END"
)

# Peers that send routes without a Peer Up (Loc-RIB instances, or a station
# started while the router's sessions were already up).
TOUCH_PEERS = (
    "INSERT INTO bgp_peers (router_ip, peer_type, peer_rd, peer_ip, peer_asn, peer_bgp_id, "
    "state, first_seen, last_seen) VALUES %s "
    "ON CONFLICT (router_ip, peer_type, peer_rd, peer_ip) DO UPDATE SET "
    "last_seen = greatest(bgp_peers.last_seen, EXCLUDED.last_seen), "
    "peer_asn = coalesce(bgp_peers.peer_asn, EXCLUDED.peer_asn), "
    "peer_bgp_id = coalesce(bgp_peers.peer_bgp_id, EXCLUDED.peer_bgp_id)"
)
TOUCH_PEERS_TEMPLATE = "(%s, %s, %s, %s, %s, %s, 'up', to_timestamp(%s), to_timestamp(%s))"

TOUCH_ROUTERS = (
    "INSERT INTO routers (router_ip, first_seen, last_seen) VALUES %s "
    "ON CONFLICT (router_ip) DO UPDATE SET "
    "last_seen = greatest(routers.last_seen, EXCLUDED.last_seen)"
)
TOUCH_ROUTERS_TEMPLATE = "(%s, to_timestamp(%s), to_timestamp(%s))"

ROUTER_CONNECTED = (
    "INSERT INTO routers (router_ip, first_seen, last_seen, connected, last_connected) "
    "VALUES (%(router_ip)s, to_timestamp(%(t)s), to_timestamp(%(t)s), true, to_timestamp(%(t)s)) "
    "ON CONFLICT (router_ip) DO UPDATE SET connected = true, "
    "last_connected = EXCLUDED.last_connected, "
    "last_seen = greatest(routers.last_seen, EXCLUDED.last_seen)"
)

ROUTER_DISCONNECTED = (
    "UPDATE routers SET connected = false, last_disconnected = to_timestamp(%(t)s), "
    "last_seen = greatest(last_seen, to_timestamp(%(t)s)) WHERE router_ip = %(router_ip)s"
)

# The router's BMP session ended: its present routes become stale, and its
# scopes are flagged so that End-of-RIB knows a sweep is due.
MARK_STALE = (
    "WITH sc AS (UPDATE route_scopes SET has_stale = true WHERE router_ip = %(router_ip)s "
    "RETURNING scope_id) "
    "UPDATE route_state r SET stale = true FROM sc "
    "WHERE r.scope_id = sc.scope_id AND NOT r.is_withdrawn AND NOT r.stale"
)

# At start: routers a previous process left marked connected.
CONNECTED_ROUTERS = "SELECT host(router_ip) FROM routers WHERE connected"

_IMPLIED_HISTORY = (
    "h AS (INSERT INTO route_updates (time, router_ip, peer_ip, peer_rd, peer_asn, rib, "
    "afi_safi, nlri, prefix, path_id, rd, is_withdrawn, cause) "
    "SELECT to_timestamp(%(t)s), router_ip, peer_ip, peer_rd, peer_asn, rib, afi_safi, nlri, "
    "prefix, path_id, rd, true, cause FROM w RETURNING 1) "
    "SELECT count(*) FROM h"
)

# End-of-RIB after a reconnect: what is still stale in that scope was not
# re-announced, so it is gone.
SWEEP_STALE = (
    "WITH sc AS (UPDATE route_scopes SET has_stale = false "
    "WHERE router_ip = %(router_ip)s AND peer_ip = %(peer_ip)s AND peer_rd = %(peer_rd)s "
    "AND rib = %(rib)s AND afi_safi = %(afi_safi)s AND has_stale RETURNING scope_id), "
    "w AS (UPDATE route_state r SET is_withdrawn = true, stale = false, cause = 'stale_sweep', "
    "withdraw_count = r.withdraw_count + 1, last_change = to_timestamp(%(t)s) "
    "FROM sc WHERE r.scope_id = sc.scope_id AND r.stale "
    "RETURNING r.router_ip, r.peer_ip, r.peer_rd, r.peer_asn, r.rib, r.afi_safi, r.nlri, "
    "r.prefix, r.path_id, r.rd, r.cause), "
    + _IMPLIED_HISTORY
)

# BMP Peer Down: every present route of the peer, all RIB views, in one go.
WITHDRAW_PEER = (
    "WITH sc AS (SELECT scope_id FROM route_scopes WHERE router_ip = %(router_ip)s "
    "AND peer_ip = %(peer_ip)s AND peer_rd = %(peer_rd)s), "
    "w AS (UPDATE route_state r SET is_withdrawn = true, stale = false, cause = 'peer_down', "
    "withdraw_count = r.withdraw_count + 1, last_change = to_timestamp(%(t)s) "
    "FROM sc WHERE r.scope_id = sc.scope_id AND NOT r.is_withdrawn "
    "RETURNING r.router_ip, r.peer_ip, r.peer_rd, r.peer_asn, r.rib, r.afi_safi, r.nlri, "
    "r.prefix, r.path_id, r.rd, r.cause), "
    + _IMPLIED_HISTORY
)

PEER_UP = (
    "INSERT INTO bgp_peers (router_ip, peer_type, peer_rd, peer_ip, peer_asn, peer_bgp_id, "
    "state, local_ip, local_port, remote_port, local_asn, local_bgp_id, hold_time, "
    "four_octet_as, families, add_path, capabilities, description, info, first_seen, "
    "last_seen, last_up) VALUES (%(router_ip)s, %(peer_type)s, %(peer_rd)s, %(peer_ip)s, "
    "%(peer_asn)s, %(peer_bgp_id)s, 'up', %(local_ip)s, %(local_port)s, %(remote_port)s, "
    "%(local_asn)s, %(local_bgp_id)s, %(hold_time)s, %(four_octet_as)s, %(families)s, "
    "%(add_path)s, %(capabilities)s, %(description)s, %(info)s, to_timestamp(%(t)s), "
    "to_timestamp(%(t)s), to_timestamp(%(t)s)) "
    "ON CONFLICT (router_ip, peer_type, peer_rd, peer_ip) DO UPDATE SET "
    "peer_asn = EXCLUDED.peer_asn, peer_bgp_id = EXCLUDED.peer_bgp_id, state = 'up', "
    "local_ip = EXCLUDED.local_ip, local_port = EXCLUDED.local_port, "
    "remote_port = EXCLUDED.remote_port, local_asn = EXCLUDED.local_asn, "
    "local_bgp_id = EXCLUDED.local_bgp_id, hold_time = EXCLUDED.hold_time, "
    "four_octet_as = EXCLUDED.four_octet_as, families = EXCLUDED.families, "
    "add_path = EXCLUDED.add_path, capabilities = EXCLUDED.capabilities, "
    "description = EXCLUDED.description, info = EXCLUDED.info, "
    "last_seen = greatest(bgp_peers.last_seen, EXCLUDED.last_seen), last_up = EXCLUDED.last_up"
)

PEER_DOWN = (
    "INSERT INTO bgp_peers (router_ip, peer_type, peer_rd, peer_ip, peer_asn, peer_bgp_id, "
    "state, first_seen, last_seen, last_down, last_down_reason, last_down_code) VALUES "
    "(%(router_ip)s, %(peer_type)s, %(peer_rd)s, %(peer_ip)s, %(peer_asn)s, %(peer_bgp_id)s, "
    "'down', to_timestamp(%(t)s), to_timestamp(%(t)s), to_timestamp(%(t)s), %(reason_text)s, "
    "%(reason_code)s) "
    "ON CONFLICT (router_ip, peer_type, peer_rd, peer_ip) DO UPDATE SET state = 'down', "
    "last_seen = greatest(bgp_peers.last_seen, EXCLUDED.last_seen), "
    "last_down = EXCLUDED.last_down, last_down_reason = EXCLUDED.last_down_reason, "
    "last_down_code = EXCLUDED.last_down_code"
)

PEER_EVENT = (
    "INSERT INTO peer_events (time, router_ip, peer_type, peer_rd, peer_ip, peer_asn, event, "
    "reason_code, details) VALUES (to_timestamp(%(t)s), %(router_ip)s, %(peer_type)s, "
    "%(peer_rd)s, %(peer_ip)s, %(peer_asn)s, %(event)s, %(reason_code)s, %(details)s)"
)

STATS = (
    "INSERT INTO stats_reports (time, router_ip, peer_type, peer_rd, peer_ip, peer_asn, "
    "stat_type, stat_name, afi_safi, value, raw) VALUES %s"
)
STATS_TEMPLATE = "(to_timestamp(%s), %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"

INITIATION = (
    "INSERT INTO routers (router_ip, sys_name, sys_descr, info, first_seen, last_seen) "
    "VALUES (%(router_ip)s, %(sys_name)s, %(sys_descr)s, %(info)s, to_timestamp(%(t)s), "
    "to_timestamp(%(t)s)) ON CONFLICT (router_ip) DO UPDATE SET "
    "sys_name = coalesce(EXCLUDED.sys_name, routers.sys_name), "
    "sys_descr = coalesce(EXCLUDED.sys_descr, routers.sys_descr), "
    "info = coalesce(EXCLUDED.info, routers.info), "
    "last_seen = greatest(routers.last_seen, EXCLUDED.last_seen)"
)

TERMINATION = (
    "UPDATE routers SET termination_reason = %(reason)s, termination_info = %(text)s, "
    "last_seen = greatest(last_seen, to_timestamp(%(t)s)) WHERE router_ip = %(router_ip)s"
)

DECODE_FAILURE = (
    "INSERT INTO decode_failures (time, router_ip, peer_ip, peer_asn, error_type, error, "
    "error_offset, raw_length, raw) VALUES (to_timestamp(%(t)s), %(router_ip)s, %(peer_ip)s, "
    "%(peer_asn)s, %(error_type)s, %(error)s, %(error_offset)s, %(raw_length)s, %(raw)s)"
)

CLAIM_BATCH = "INSERT INTO writer_batches (batch_id) VALUES (%s) ON CONFLICT DO NOTHING"
PRUNE_BATCHES = "DELETE FROM writer_batches WHERE committed_at < now() - interval '1 day'"

# Native partitions of route_updates (absent with TimescaleDB).
ROUTE_UPDATES_KIND = (
    "SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass('route_updates')"
)
LIST_PARTITIONS = (
    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
    "WHERE i.inhparent = to_regclass('route_updates')"
)
PARTITION_LOCK = "SELECT pg_advisory_xact_lock(%s)"
