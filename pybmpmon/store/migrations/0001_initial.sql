-- 0001: the initial schema (plain PostgreSQL 13+, TimescaleDB when present).
--
-- Public interface (users and tools query these names; columns may be added,
-- never renamed): routers, bgp_peers, peer_events, stats_reports,
-- route_updates and route_state (views over the collector's narrow route
-- tables, see below), and the views current_routes and unstable_prefixes.
-- Everything else is the collector's own bookkeeping.
--
-- Naming: rib is one of adj_in_pre, adj_in_post, loc_rib, adj_out_pre,
-- adj_out_post; afi_safi is the family name printed by `pybmpmon decode`
-- (ipv4_unicast, ipv6_unicast, evpn, ipv4_vpn, ...).  ASNs are bigint (they
-- are unsigned 32-bit).  path_id is 0 when the route has no Add-Path path
-- identifier.  `nlri` is the text key of a route within its family: the
-- prefix for unicast ("192.0.2.0/24"), "<rd> <prefix>" for VPN, the RFC 7432
-- route key for EVPN ("type2 65000:1 etag 0 mac 00:11:22:33:44:55 ...").

-- The BMP speakers, one row per source address.
CREATE TABLE routers (
    router_ip inet PRIMARY KEY,
    sys_name text,
    sys_descr text,
    info jsonb,                      -- the other Initiation TLVs
    first_seen timestamptz NOT NULL,
    last_seen timestamptz NOT NULL,
    connected boolean NOT NULL DEFAULT false,
    last_connected timestamptz,
    last_disconnected timestamptz,
    termination_reason smallint,     -- RFC 7854 §4.5 reason of the last Termination
    termination_info text            -- its string TLVs
);

-- One row per BGP peer of a router, from Peer Up / Peer Down and from the
-- route messages of peers that never sent a Peer Up (Loc-RIB instances).
CREATE TABLE bgp_peers (
    router_ip inet NOT NULL,
    peer_type smallint NOT NULL,     -- 0 global, 1 RD instance, 2 local instance, 3 Loc-RIB
    peer_rd text NOT NULL,           -- peer distinguisher, "0" when zero
    peer_ip inet NOT NULL,
    peer_asn bigint,
    peer_bgp_id inet,
    state text NOT NULL CHECK (state IN ('up', 'down')),
    local_ip inet,
    local_port integer,
    remote_port integer,
    local_asn bigint,
    local_bgp_id inet,
    hold_time integer,               -- the smaller of the two OPENs' hold times
    four_octet_as boolean,           -- both sides advertised RFC 6793
    families text[],                 -- multiprotocol families both sides advertised
    add_path text[],                 -- "<family>:<send|receive|both>" as the peer advertised
    capabilities jsonb,              -- {"sent": [...], "received": [...]} every capability
    description text,                -- Peer Up string TLVs (FRR: the neighbor description)
    info jsonb,                      -- the other Peer Up information TLVs
    first_seen timestamptz NOT NULL,
    last_seen timestamptz NOT NULL,
    last_up timestamptz,
    last_down timestamptz,
    last_down_reason text,           -- e.g. "remote_notification: cease/2"
    last_down_code smallint,         -- the Peer Down reason code (RFC 7854 §4.9)
    PRIMARY KEY (router_ip, peer_type, peer_rd, peer_ip)
);

-- Peer up/down history.  details: notification_code, notification_subcode,
-- notification_data (hex), fsm_event, routes_withdrawn, reason, local_ip, ...
CREATE TABLE peer_events (
    time timestamptz NOT NULL,       -- the per-peer header time when sane (see route_history)
    received_at timestamptz,         -- when pybmpmon read the message
    router_ip inet NOT NULL,
    peer_type smallint NOT NULL,
    peer_rd text NOT NULL,
    peer_ip inet NOT NULL,
    peer_asn bigint,
    event text NOT NULL CHECK (event IN ('peer_up', 'peer_down')),
    reason_code smallint,
    details jsonb
);
-- "Which peers went down lately, and why": recent events first.
CREATE INDEX peer_events_time_idx ON peer_events (time);

-- Statistics reports, one row per counter.  value is NULL (and raw holds the
-- hex) for counter types this collector does not know.
CREATE TABLE stats_reports (
    time timestamptz NOT NULL,
    router_ip inet NOT NULL,
    peer_type smallint NOT NULL,
    peer_rd text NOT NULL,
    peer_ip inet NOT NULL,
    peer_asn bigint,
    stat_type integer NOT NULL,
    stat_name text NOT NULL,
    afi_safi text,
    value bigint,
    raw text
);
-- "Counters of one peer over time".
CREATE INDEX stats_reports_peer_time_idx ON stats_reports (router_ip, peer_ip, time);

-- Messages that did not decode, kept for support (raw cut to 64 KiB).
CREATE TABLE decode_failures (
    time timestamptz NOT NULL,
    router_ip inet NOT NULL,
    peer_ip inet,
    peer_asn bigint,
    error_type text NOT NULL,
    error text NOT NULL,
    error_offset integer,
    raw_length integer NOT NULL,
    raw bytea
);
CREATE INDEX decode_failures_time_idx ON decode_failures (time);

-- The support view of undecodable messages: the error and the first 4 KiB of
-- the message as hex, ready to paste into `pybmpmon decode` (xxd -r -p).
CREATE VIEW parse_errors AS
SELECT time, router_ip, peer_ip, peer_asn, error_type, error, error_offset, raw_length,
       encode(substring(raw FROM 1 FOR 4096), 'hex') AS hex
FROM decode_failures;

-- Routes are stored narrow and shown wide.  Three tables hold them:
--   route_scopes  one row per (router, peer, RIB view, family);
--   route_attrs   one row per distinct attribute set (next hop included),
--                 keyed by a 64-bit digest of its octets as received;
--   route_history / route_current  one row per update / per route key, each
--                 naming its scope and its attribute set by number.
-- The public relations route_updates and route_state are views that join them
-- back into one wide row.  A full table shares one attribute set among many
-- routes, so the writer sends and PostgreSQL parses, stores and indexes each
-- AS path and community list once instead of once per route.

-- The scopes.  epoch counts the router's BMP sessions that ended: a route
-- whose epoch is older than its scope's was last heard before the router
-- disconnected, i.e. it is stale.  Marking a router's routes stale is then
-- one small UPDATE here, whatever their number.  has_stale tells End-of-RIB
-- that a sweep is due after a reconnect.
CREATE TABLE route_scopes (
    scope_id serial PRIMARY KEY,
    router_ip inet NOT NULL,
    peer_ip inet NOT NULL,
    peer_rd text NOT NULL,
    rib text NOT NULL,
    afi_safi text NOT NULL,
    epoch integer NOT NULL DEFAULT 0,
    has_stale boolean NOT NULL DEFAULT false,
    UNIQUE (router_ip, peer_ip, peer_rd, rib, afi_safi)
);

-- Attribute sets.  attr_hash is a BLAKE2b digest (8 bytes) of the set as
-- received (see store/rows.py attribute_digest), so a set shared by a
-- million routes is written once.  last_sent:
-- when a writer last sent the set (refreshed at most every ten minutes); a
-- writer names a set without sending it for at most an hour after that.
-- Maintenance deletes the sets that no route_current row uses and that were
-- last sent long enough ago for their history to be past ROUTE_RETENTION.
CREATE TABLE route_attrs (
    attr_hash bigint PRIMARY KEY,
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
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_sent timestamptz NOT NULL DEFAULT now()
);

-- Route history: one row per announce or withdraw, partitioned by day (or a
-- TimescaleDB hypertable).  cause is NULL for what a router sent in an UPDATE,
-- 'peer_down' for the withdrawals a BMP Peer Down implies and 'stale_sweep'
-- for stale routes withdrawn at End-of-RIB after a reconnect; withdrawals
-- carry no attributes (attr_hash NULL).  time is the BMP per-peer header
-- time when sane (the router's clock: for a table dump, when it learned the
-- route), received_at when the collector read the message (for an implied
-- withdrawal, the message that implied it).
DO $$
DECLARE
    columns text := $cols$
        time timestamptz NOT NULL,
        received_at timestamptz NOT NULL,
        scope_id integer NOT NULL,
        peer_asn bigint,
        nlri text NOT NULL,
        prefix cidr,
        path_id bigint NOT NULL DEFAULT 0,
        rd text,
        is_withdrawn boolean NOT NULL,
        cause text,
        attr_hash bigint,
        labels integer[],
        evpn_route_type smallint,
        evpn_esi text,
        evpn_ethernet_tag bigint,
        evpn_mac text,
        evpn_ip inet,
        evpn_gateway inet
    $cols$;
    timescale boolean := false;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        timescale := true;
    ELSIF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS timescaledb;
            timescale := true;
        EXCEPTION WHEN others THEN
            -- Not preloaded, or no privilege: plain partitions then.
            RAISE NOTICE 'timescaledb not usable: %', SQLERRM;
        END;
    END IF;
    IF timescale THEN
        EXECUTE format('CREATE TABLE route_history (%s)', columns);
        PERFORM create_hypertable('route_history', 'time',
                                  chunk_time_interval => interval '1 day');
        PERFORM create_hypertable('peer_events', 'time', migrate_data => true);
        PERFORM create_hypertable('stats_reports', 'time', migrate_data => true);
        BEGIN
            -- Compression needs the TimescaleDB community edition; the
            -- Apache-2 build lacks it, and that is fine.
            EXECUTE 'ALTER TABLE route_history SET (timescaledb.compress, '
                    'timescaledb.compress_segmentby = ''scope_id'', '
                    'timescaledb.compress_orderby = ''time'')';
            PERFORM add_compression_policy('route_history', interval '2 days');
        EXCEPTION WHEN others THEN
            RAISE NOTICE 'timescaledb compression not enabled: %', SQLERRM;
        END;
    ELSE
        EXECUTE format('CREATE TABLE route_history (%s) PARTITION BY RANGE (time)', columns);
    END IF;
END
$$;
-- "History of one prefix" (and "what did router R see for P at time T").
CREATE INDEX route_history_prefix_time_idx ON route_history (prefix, time);

-- Current state: one row per route key (scope, nlri, path_id), the latest
-- attributes (kept when the route is withdrawn), counters and flags.
--   learn_count / withdraw_count: announcements / withdrawals seen (implied
--     withdrawals included);
--   change_count: changes carried by UPDATEs: new attributes, a withdrawal of
--     a present route, a re-announcement after a withdrawal by UPDATE (the
--     first announcement, duplicates and the return of a route that a Peer
--     Down or a sweep removed with the same attributes do not count);
--   last_change: when the attributes or the withdrawn flag last changed;
--   epoch: the scope's epoch when the route was last heard (see route_scopes);
--   cause: what withdrew the route (NULL for an UPDATE, 'peer_down',
--     'stale_sweep').
-- fillfactor leaves room on each page so that re-announcements can be HOT
-- updates (no index maintenance).
CREATE TABLE route_current (
    scope_id integer NOT NULL,  -- route_scopes (no foreign key: it would cost a lookup per insert)
    nlri text NOT NULL,
    path_id bigint NOT NULL DEFAULT 0,
    peer_asn bigint,
    prefix cidr,
    rd text,
    is_withdrawn boolean NOT NULL,
    epoch integer NOT NULL DEFAULT 0,
    cause text,
    attr_hash bigint,
    labels integer[],
    evpn_route_type smallint,
    evpn_esi text,
    evpn_ethernet_tag bigint,
    evpn_mac text,
    evpn_ip inet,
    evpn_gateway inet,
    first_seen timestamptz NOT NULL,
    last_seen timestamptz NOT NULL,
    last_change timestamptz NOT NULL,
    learn_count integer NOT NULL DEFAULT 0,
    withdraw_count integer NOT NULL DEFAULT 0,
    change_count integer NOT NULL DEFAULT 0,
    -- The key serves the writer's upsert, and its leading scope_id serves
    -- Peer Down, views by router or peer and the End-of-RIB sweep.
    PRIMARY KEY (scope_id, nlri, path_id)
) WITH (fillfactor = 80);
-- "Current routes of one prefix" (prefix = P), and through
-- covering_prefixes() "of the prefixes covering an address".  A btree: a
-- GiST index would answer >>= directly but costs a quarter more per insert.
CREATE INDEX route_current_prefix_idx ON route_current (prefix);
-- unstable_prefixes: candidates are the few routes that changed recently.
CREATE INDEX route_current_churn_idx ON route_current (last_change) WHERE change_count > 0;

-- The public, wide views.  Columns keep the names and order of the SQL
-- interface; attr_hash and scope_id are there for joins of one's own.
CREATE VIEW route_updates AS
SELECT h.time, s.router_ip, s.peer_ip, s.peer_rd, h.peer_asn, s.rib, s.afi_safi, h.nlri,
       h.prefix, h.path_id, h.rd, h.is_withdrawn, h.cause, a.next_hop, a.origin, a.as_path,
       a.origin_as, a.med, a.local_pref, a.communities, a.large_communities,
       a.ext_communities, a.atomic_aggregate, a.aggregator, a.originator_id, a.cluster_list,
       h.labels, h.evpn_route_type, h.evpn_esi, h.evpn_ethernet_tag, h.evpn_mac, h.evpn_ip,
       h.evpn_gateway, h.attr_hash, h.scope_id, h.received_at
FROM route_history h
JOIN route_scopes s ON s.scope_id = h.scope_id
LEFT JOIN route_attrs a ON a.attr_hash = h.attr_hash;

-- stale: the router's BMP session ended since the route was last heard (and
-- no End-of-RIB has swept it since the reconnect).
CREATE VIEW route_state AS
SELECT r.scope_id, s.router_ip, s.peer_ip, s.peer_rd, s.rib, s.afi_safi, r.nlri, r.path_id,
       r.peer_asn, r.prefix, r.rd, r.is_withdrawn,
       (NOT r.is_withdrawn AND r.epoch < s.epoch) AS stale,
       r.cause, a.next_hop, a.origin, a.as_path, a.origin_as, a.med, a.local_pref,
       a.communities, a.large_communities, a.ext_communities, a.atomic_aggregate,
       a.aggregator, a.originator_id, a.cluster_list, r.labels, r.evpn_route_type,
       r.evpn_esi, r.evpn_ethernet_tag, r.evpn_mac, r.evpn_ip, r.evpn_gateway, r.attr_hash,
       r.first_seen, r.last_seen, r.last_change, r.learn_count, r.withdraw_count,
       r.change_count
FROM route_current r
JOIN route_scopes s ON s.scope_id = r.scope_id
LEFT JOIN route_attrs a ON a.attr_hash = r.attr_hash;

-- Every prefix that covers an address (or a prefix): /0 up to its length.
--   SELECT * FROM current_routes WHERE prefix = ANY(covering_prefixes('192.0.2.1'));
CREATE FUNCTION covering_prefixes(a inet) RETURNS cidr[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT array_agg(set_masklen(a::cidr, len)::cidr ORDER BY len)
    FROM generate_series(0, masklen(a)) AS len
$$;

-- Batches the writer committed: a batch retried after a lost COMMIT
-- acknowledgement is recognised and not applied twice.
CREATE TABLE writer_batches (
    batch_id uuid PRIMARY KEY,
    committed_at timestamptz NOT NULL DEFAULT now()
);

CREATE VIEW current_routes AS
    SELECT * FROM route_state WHERE NOT is_withdrawn;

-- The history of one prefix, newest first (an index scan on
-- route_history_prefix_time_idx):
--   SELECT * FROM prefix_history('192.0.2.0/24');
--   SELECT * FROM prefix_history('192.0.2.0/24', now() - interval '1 day');
CREATE FUNCTION prefix_history(p cidr, since timestamptz DEFAULT '-infinity',
                               until timestamptz DEFAULT 'infinity')
RETURNS SETOF route_updates
LANGUAGE sql STABLE AS $$
    SELECT * FROM route_updates
    WHERE prefix = p AND time >= since AND time <= until
    ORDER BY time DESC
$$;

-- Current routes of a prefix, and of the prefixes covering an address, most
-- specific first (both use route_current_prefix_idx):
--   SELECT * FROM current_routes WHERE prefix = '192.0.2.0/24';
--   SELECT * FROM routes_covering('192.0.2.1');
CREATE FUNCTION routes_covering(a inet) RETURNS SETOF route_state
LANGUAGE sql STABLE AS $$
    SELECT * FROM route_state
    WHERE prefix = ANY(covering_prefixes(a)) AND NOT is_withdrawn
    ORDER BY masklen(prefix) DESC
$$;

-- The prefixes with the most announce+withdraw churn since a time.
-- Candidates come from route_current through route_current_churn_idx: the
-- 10 x max_rows prefixes with the most recorded changes among those that
-- changed in the window (cheap however big the table); their updates in the
-- window are then counted exactly in route_history (UPDATE-driven rows only,
-- one index probe each).  routers / peers: how many saw the prefix change.
CREATE FUNCTION unstable_prefixes_since(since timestamptz, max_rows integer DEFAULT 100)
RETURNS TABLE (prefix cidr, afi_safi text, updates bigint, announces bigint,
               withdraws bigint, routers bigint, peers bigint,
               first_update timestamptz, last_update timestamptz)
LANGUAGE sql STABLE AS $$
    WITH candidates AS (
        SELECT r.prefix, min(s.afi_safi) AS afi_safi,
               count(DISTINCT s.router_ip) AS routers,
               count(DISTINCT (s.router_ip, s.peer_ip)) AS peers
        FROM route_current r JOIN route_scopes s ON s.scope_id = r.scope_id
        WHERE r.change_count > 0 AND r.last_change >= since AND r.prefix IS NOT NULL
        GROUP BY r.prefix
        ORDER BY sum(r.change_count) DESC
        LIMIT max_rows * 10
    )
    SELECT c.prefix, c.afi_safi, h.updates, h.announces, h.withdraws, c.routers, c.peers,
           h.first_update, h.last_update
    FROM candidates c
    CROSS JOIN LATERAL (
        SELECT count(*) AS updates,
               count(*) FILTER (WHERE NOT u.is_withdrawn) AS announces,
               count(*) FILTER (WHERE u.is_withdrawn) AS withdraws,
               min(u.time) AS first_update, max(u.time) AS last_update
        FROM route_history u
        WHERE u.prefix = c.prefix AND u.time >= since AND u.cause IS NULL
    ) h
    WHERE h.updates > 1
    ORDER BY h.updates DESC, c.prefix
    LIMIT max_rows
$$;

-- The last hour's most unstable prefixes.
CREATE VIEW unstable_prefixes AS
    SELECT * FROM unstable_prefixes_since(now() - interval '1 hour');
