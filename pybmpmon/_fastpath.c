/*
 * pybmpmon._fastpath: optional C accelerator for the common BGP UPDATE.
 *
 * Implements the same decoding as pybmpmon/bmp/decode.py (decode_bmp, for a
 * Route Monitoring message of a peer in its peer cache), pybmpmon/bgp/message.py (decode_update),
 * pybmpmon/bgp/attributes.py (build_attributes, 4-octet AS sessions) and
 * pybmpmon/bgp/nlri.py (decode_ipv4, _decode_ipv6, MP_REACH/MP_UNREACH of
 * IPv4/IPv6 unicast): RFC 4271 §4.3 (UPDATE, ORIGIN, AS_PATH, NEXT_HOP, MED,
 * LOCAL_PREF, ATOMIC_AGGREGATE, AGGREGATOR), RFC 5065 §3 (confederation
 * segments), RFC 6793 (4-octet AS), RFC 1997 (COMMUNITIES), RFC 4456 §8
 * (ORIGINATOR_ID, CLUSTER_LIST), RFC 4360 (EXTENDED_COMMUNITIES), RFC 8092
 * (LARGE_COMMUNITIES), RFC 4760 §3-4 (MP_REACH/MP_UNREACH), RFC 2545 §3
 * (link-local next hop), RFC 7911 §3 (path identifiers), RFC 4724 §2
 * (End-of-RIB).
 *
 * Strategy: the Python code is the reference.  This module handles only the
 * well-formed common case and returns None for anything else (any length or
 * bound problem, an attribute it does not decode, a duplicate, another
 * family, a 2-octet AS session on a cache miss ...); the caller then runs the
 * Python decoder, which gives the exact result or the precise error.  Every
 * input is validated completely before any object is built, and the shared
 * attribute cache is only written once the whole UPDATE decoded, so bailing
 * out leaves no trace.  Results are instances of the same NamedTuple types,
 * with the same items as tuple.__new__(cls, items) gives.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <string.h>

/* Set once by configure(): the model types and the constant objects the
   Python decoder puts into its results. */
static PyTypeObject *Update_T, *RouteSet_T, *Nlri_T, *Attributes_T;
static PyObject *Empty_Attributes;
static PyObject *Origins[3];   /* Origin.IGP, EGP, INCOMPLETE */
static PyObject *SegTypes[5];  /* [1..4]: AsPathSegmentType members */
static PyObject *Fam_V4, *Fam_V6;  /* "ipv4_unicast", "ipv6_unicast" */
static int Configured;
static PyTypeObject *PeerHeader_T, *RouteMonitoring_T;  /* set by configure_bmp() */
/* Interned at import: the BgpContext fields route_monitoring() reads. */
static PyObject *Name_Cache, *Name_Four_Octet_As, *Name_Add_Path, *Name_Cache_Limit;
static int Bmp_Configured;

/* Created at import. */
static PyObject *Key_V4, *Key_V6;  /* (1, 1), (2, 1): Add-Path lookups */
static PyObject *Empty_Tuple;
static char Dec[256][4];  /* decimal text of 0..255 (0..128: prefix lengths) */
static unsigned char DecLen[256];
static char Hex[65536][5];  /* lower-case hex text of 0..0xffff, no leading zeros */
static int Own_Ipv6_Text;  /* format_v6 agrees with the C library's inet_ntop */

/* Bumped whenever configure() or decode_update() change their arguments, so
   that pybmpmon.bgp.message ignores a stale build instead of calling it wrongly. */
#define API_VERSION 2

/* "Use the Python path": NULL without an exception set.  NULL with an
   exception set is a real error (memory) and propagates. */
#define BAIL NULL

static inline unsigned
u16(const unsigned char *p)
{
    return (unsigned)p[0] << 8 | p[1];
}

static inline unsigned long
u32(const unsigned char *p)
{
    return (unsigned long)p[0] << 24 | (unsigned long)p[1] << 16 | (unsigned long)p[2] << 8 | p[3];
}

/* Strategy: every container made here is an immutable tuple (or NamedTuple)
   holding only strings, numbers, None, bools, enum members, bytes and such
   tuples made before it (a PeerHeader also holds the peer's address objects,
   which hold nothing), so it cannot be part of a reference cycle and is
   untracked by the cyclic GC at once.  CPython does the same for plain tuples
   lazily, in each collection, but never for tuple subclasses; a full table
   otherwise keeps the GC scanning millions of objects. */
static PyObject *
new_tuple(Py_ssize_t n)
{
    PyObject *t = PyTuple_New(n);
    if (t != NULL)
        PyObject_GC_UnTrack(t);
    return t;
}

/* An instance of the tuple subclass *type* holding *items* (new references,
   stolen, also on failure), like tuple.__new__(type, items).  Allocated as the
   tuple type allocates its own instances (PyObject_GC_NewVar: no zeroing, not
   tracked) rather than through tp_alloc, which zeroes and tracks; configure()
   checked that the type adds no storage (no __dict__, no __weakref__) to a
   tuple's, so every field is set right here. */
static PyObject *
make(PyTypeObject *type, Py_ssize_t n, PyObject **items)
{
    PyTupleObject *obj = PyObject_GC_NewVar(PyTupleObject, type, n);
    Py_ssize_t i;
    if (obj == NULL) {
        for (i = 0; i < n; i++)
            Py_XDECREF(items[i]);
        return NULL;
    }
    for (i = 0; i < n; i++)
        obj->ob_item[i] = items[i];
    return (PyObject *)obj;
}

static PyObject *
ascii(const char *text, Py_ssize_t n)
{
    PyObject *s = PyUnicode_New(n, 127);
    if (s != NULL)
        memcpy(PyUnicode_1BYTE_DATA(s), text, n);
    return s;
}

static char *
put_v4(char *p, const unsigned char *a)
{
    int i;
    for (i = 0; i < 4; i++) {
        memcpy(p, Dec[a[i]], DecLen[a[i]]);
        p += DecLen[a[i]];
        if (i < 3)
            *p++ = '.';
    }
    return p;
}

/* IPv6 text by the rules of the C library's inet_ntop, which is what
   socket.inet_ntop calls: the longest run of two or more zero groups (the
   first of equal runs) becomes "::", groups are lower-case hex without
   leading zeros, and an address whose first 96 bits are zero (without being
   ::1 or ::) or ::ffff:0:0/96 ends in dotted IPv4.  Used only when it agrees
   with inet_ntop on the addresses of ipv6_self_check(); inet_ntop itself is
   several times slower. */
static char *
format_v6(char *p, const unsigned char *a)
{
    unsigned w[8];
    int i, run = -1, run_len = 0, best = -1, best_len = 0;
    for (i = 0; i < 8; i++) {
        w[i] = (unsigned)a[2 * i] << 8 | a[2 * i + 1];
        if (w[i] == 0) {
            if (run < 0)
                run = i, run_len = 0;
            if (++run_len > best_len)
                best = run, best_len = run_len;
        }
        else {
            run = -1;
        }
    }
    if (best_len < 2)
        best = -1;
    for (i = 0; i < 8; i++) {
        if (i == best) {
            *p++ = ':';
            i += best_len - 1;
            if (i == 7)
                *p++ = ':';
            continue;
        }
        if (i > 0)
            *p++ = ':';
        if (i == 6 && best == 0 && (best_len == 6 || (best_len == 5 && w[5] == 0xffff)))
            return put_v4(p, a + 12);
        memcpy(p, Hex[w[i]], 4);
        p += strlen(Hex[w[i]]);
    }
    return p;
}

/* Address text as socket.inet_ntop gives it. */
static Py_ssize_t
address_text(char *buf, const unsigned char *a, int v6)
{
    if (!v6)
        return put_v4(buf, a) - buf;
    if (Own_Ipv6_Text)
        return format_v6(buf, a) - buf;
    if (inet_ntop(AF_INET6, a, buf, INET6_ADDRSTRLEN) == NULL)
        return -1;
    return (Py_ssize_t)strlen(buf);
}

/* Whether format_v6 gives inet_ntop's text for every address whose eight
   groups are each 0, 1 or 0xffff (all zero-run shapes, both embedded-IPv4
   forms and their near misses), and, for the 27 shapes with five leading
   zero groups, with other digits in the last two groups. */
static int
ipv6_self_check(void)
{
    static const unsigned values[3] = {0, 1, 0xffff};
    char mine[64], libc[INET6_ADDRSTRLEN];
    unsigned char a[16];
    int n, i, v;
    for (n = 0; n < 6561 + 27; n++) {
        for (i = 0, v = n < 6561 ? n : (n - 6561) * 243; i < 8; i++, v /= 3) {
            a[2 * i] = (unsigned char)(values[v % 3] >> 8);
            a[2 * i + 1] = (unsigned char)values[v % 3];
            if (n >= 6561 && i >= 6)
                a[2 * i + 1] = (unsigned char)(0x0a + 16 * i);
        }
        *format_v6(mine, a) = '\0';
        if (inet_ntop(AF_INET6, a, libc, sizeof libc) == NULL || strcmp(mine, libc) != 0)
            return 0;
    }
    return 1;
}

static PyObject *
ip_text(const unsigned char *a, int v6)
{
    char buf[INET6_ADDRSTRLEN + 8];
    Py_ssize_t n = address_text(buf, a, v6);
    return n < 0 ? BAIL : ascii(buf, n);
}

/* ---- NLRI (nlri.decode_ipv4, nlri._decode_ipv6) ---------------------------- */

/* The prefixes in d[pos:end] as a tuple of Nlri; v6 selects IPv6, add_path a
   4-octet path identifier before each prefix.  Host bits are cleared. */
static PyObject *
prefixes(const unsigned char *d, Py_ssize_t pos, Py_ssize_t end, int v6, int add_path)
{
    unsigned maxbits = v6 ? 128 : 32;
    Py_ssize_t count = 0, p = pos, i;
    PyObject *out;

    while (p < end) {  /* validate and count first: nothing to undo later */
        if (add_path) {
            if (p + 5 > end)
                return BAIL;
            p += 4;
        }
        if (d[p] > maxbits)
            return BAIL;
        p += 1 + ((d[p] + 7) >> 3);
        if (p > end)
            return BAIL;
        count++;
    }
    out = new_tuple(count);
    if (out == NULL)
        return NULL;
    p = pos;
    for (i = 0; i < count; i++) {
        unsigned char addr[16] = {0};
        char buf[INET6_ADDRSTRLEN + 8];
        PyObject *items[5];
        PyObject *path_id, *nlri;
        unsigned plen, nbytes;
        Py_ssize_t n;

        if (add_path) {
            path_id = PyLong_FromUnsignedLong(u32(d + p));
            if (path_id == NULL)
                goto fail;
            p += 4;
        }
        else {
            path_id = Py_NewRef(Py_None);
        }
        plen = d[p];
        nbytes = (plen + 7) >> 3;
        memcpy(addr, d + p + 1, nbytes);
        if (plen & 7)
            addr[nbytes - 1] &= (unsigned char)(0xFF << (8 - (plen & 7)));
        p += 1 + nbytes;
        n = address_text(buf, addr, v6);
        if (n < 0) {
            Py_DECREF(path_id);
            goto fail;
        }
        buf[n++] = '/';
        memcpy(buf + n, Dec[plen], 4);
        n += DecLen[plen];
        items[0] = ascii(buf, n);
        if (items[0] == NULL) {
            Py_DECREF(path_id);
            goto fail;
        }
        items[1] = path_id;
        items[2] = Py_NewRef(Py_None);
        items[3] = Py_NewRef(Empty_Tuple);
        items[4] = Py_NewRef(Py_None);
        nlri = make(Nlri_T, 5, items);
        if (nlri == NULL)
            goto fail;
        PyTuple_SET_ITEM(out, i, nlri);
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* RouteSet(afi, 1, family, next_hop, nlri, link_local, None); steals the
   three object arguments, any of which may be NULL after a failure. */
static PyObject *
route_set(int afi, PyObject *next_hop, PyObject *nlri, PyObject *link_local)
{
    PyObject *items[7];
    if (next_hop == NULL || nlri == NULL || link_local == NULL) {
        Py_XDECREF(next_hop);
        Py_XDECREF(nlri);
        Py_XDECREF(link_local);
        return NULL;
    }
    items[0] = PyLong_FromLong(afi);  /* small ints: cached, cannot fail */
    items[1] = PyLong_FromLong(1);
    items[2] = Py_NewRef(afi == 1 ? Fam_V4 : Fam_V6);
    items[3] = next_hop;
    items[4] = nlri;
    items[5] = link_local;
    items[6] = Py_NewRef(Py_None);
    return make(RouteSet_T, 7, items);
}

/* MP_REACH_NLRI value d[s:e] of IPv4/IPv6 unicast (nlri.decode_mp_reach) with
   a 4-, 16- or 32-octet next hop (nlri._next_hop). */
static PyObject *
mp_reach(const unsigned char *d, Py_ssize_t s, Py_ssize_t e, int ap4, int ap6)
{
    unsigned afi, nh_len;
    Py_ssize_t nlri_at;
    PyObject *nlri, *next_hop, *link_local;

    if (e - s < 5)
        return BAIL;
    afi = u16(d + s);
    nh_len = d[s + 3];
    nlri_at = s + 4 + nh_len + 1;
    if (nlri_at > e || d[s + 2] != 1 || (afi != 1 && afi != 2))
        return BAIL;
    if (nh_len != 4 && nh_len != 16 && nh_len != 32)
        return BAIL;
    nlri = prefixes(d, nlri_at, e, afi == 2, afi == 2 ? ap6 : ap4);
    if (nlri == NULL)
        return NULL;
    next_hop = ip_text(d + s + 4, nh_len != 4);
    if (next_hop == NULL) {
        Py_DECREF(nlri);
        return NULL;
    }
    link_local = nh_len == 32 ? ip_text(d + s + 20, 1) : Py_NewRef(Py_None);
    return route_set(afi, next_hop, nlri, link_local);
}

/* MP_UNREACH_NLRI value d[s:e] of IPv4/IPv6 unicast (nlri.decode_mp_unreach);
   *afi_out* tells the family for End-of-RIB. */
static PyObject *
mp_unreach(const unsigned char *d, Py_ssize_t s, Py_ssize_t e, int ap4, int ap6, int *afi_out)
{
    unsigned afi;
    if (e - s < 3)
        return BAIL;
    afi = u16(d + s);
    if (d[s + 2] != 1 || (afi != 1 && afi != 2))
        return BAIL;
    *afi_out = (int)afi;
    return route_set(afi, Py_NewRef(Py_None),
                     prefixes(d, s + 3, e, afi == 2, afi == 2 ? ap6 : ap4), Py_NewRef(Py_None));
}

/* ---- path attributes (attributes.build_attributes, 4-octet AS) ------------ */

/* AS_PATH value: tuple of (AsPathSegmentType, (asn, ...)) (_parse_path, wide). */
static PyObject *
as_path(const unsigned char *v, Py_ssize_t len)
{
    Py_ssize_t pos = 0, nseg = 0, i, j;
    PyObject *out;

    while (pos < len) {
        if (pos + 2 > len || v[pos] < 1 || v[pos] > 4 || v[pos + 1] == 0)
            return BAIL;
        pos += 2 + 4 * (Py_ssize_t)v[pos + 1];
        if (pos > len)
            return BAIL;
        nseg++;
    }
    out = new_tuple(nseg);
    if (out == NULL)
        return NULL;
    pos = 0;
    for (i = 0; i < nseg; i++) {
        unsigned count = v[pos + 1];
        PyObject *asns = new_tuple(count), *seg;
        if (asns == NULL)
            goto fail;
        for (j = 0; j < count; j++) {
            PyObject *asn = PyLong_FromUnsignedLong(u32(v + pos + 2 + 4 * j));
            if (asn == NULL) {
                Py_DECREF(asns);
                goto fail;
            }
            PyTuple_SET_ITEM(asns, j, asn);
        }
        seg = new_tuple(2);
        if (seg == NULL) {
            Py_DECREF(asns);
            goto fail;
        }
        PyTuple_SET_ITEM(seg, 0, Py_NewRef(SegTypes[v[pos]]));
        PyTuple_SET_ITEM(seg, 1, asns);
        PyTuple_SET_ITEM(out, i, seg);
        pos += 2 + 4 * (Py_ssize_t)count;
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* Tuple of *width*-tuples of 16-bit (width 2) or 32-bit (width 3) numbers:
   COMMUNITIES pairs and LARGE_COMMUNITIES triples. */
static PyObject *
number_groups(const unsigned char *v, Py_ssize_t len, int width)
{
    int size = width == 2 ? 2 : 4;
    Py_ssize_t n = len / (size * width), i;
    int k;
    PyObject *out = new_tuple(n);
    if (out == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        PyObject *group = new_tuple(width);
        if (group == NULL)
            goto fail;
        PyTuple_SET_ITEM(out, i, group);
        for (k = 0; k < width; k++) {
            const unsigned char *p = v + (i * width + k) * size;
            PyObject *num = PyLong_FromUnsignedLong(size == 2 ? u16(p) : u32(p));
            if (num == NULL)
                goto fail;
            PyTuple_SET_ITEM(group, k, num);
        }
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* Tuple of the *size*-octet pieces of v: IPv4 texts (CLUSTER_LIST, size 4)
   or bytes (EXTENDED_COMMUNITIES, size 8). */
static PyObject *
pieces(const unsigned char *v, Py_ssize_t len, int size)
{
    Py_ssize_t n = len / size, i;
    PyObject *out = new_tuple(n);
    if (out == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        PyObject *item = size == 4 ? ip_text(v + 4 * i, 0)
                                   : PyBytes_FromStringAndSize((const char *)v + 8 * i, 8);
        if (item == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, i, item);
    }
    return out;
}

enum { F_ORIGIN, F_AS_PATH, F_NEXT_HOP, F_MED, F_LOCAL_PREF, F_ATOMIC, F_AGGREGATOR,
       F_COMMUNITIES, F_ORIGINATOR, F_CLUSTER, F_EXT, F_LARGE, F_OTC, F_AIGP,
       F_UNKNOWN, F_DISCARDED, F_WIRE, N_FIELDS };
#define ATTRIBUTE_FIELDS "origin as_path next_hop med local_pref atomic_aggregate aggregator " \
    "communities originator_id cluster_list ext_communities large_communities only_to_customer " \
    "aigp unknown discarded wire"  /* in the order of the F_ slots */

/* The Attributes of the attribute block d[start:end] whose TLV lengths the
   caller checked, MP_REACH/MP_UNREACH skipped, with *wire* as their wire
   field; BAIL on anything that build_attributes would raise for, discard, or
   keep as unknown. */
static PyObject *
decode_attributes(const unsigned char *d, Py_ssize_t start, Py_ssize_t end, PyObject *wire)
{
    PyObject *f[N_FIELDS] = {NULL};
    Py_ssize_t pos = start, len;
    int slot, i;

    while (pos < end) {
        unsigned code = d[pos + 1];
        const unsigned char *v;
        PyObject *value;
        if (d[pos] & 0x10) {
            v = d + pos + 4;
            len = u16(d + pos + 2);
        }
        else {
            v = d + pos + 3;
            len = d[pos + 2];
        }
        pos = (v - d) + len;
        if (pos > end)
            goto fail;
        switch (code) {
        case 14: case 15:
            continue;
        case 1:
            if (len != 1 || v[0] > 2)
                goto fail;
            slot = F_ORIGIN;
            value = Py_NewRef(Origins[v[0]]);
            break;
        case 2:
            slot = F_AS_PATH;
            value = as_path(v, len);
            break;
        case 3: case 9:
            if (len != 4)
                goto fail;
            slot = code == 3 ? F_NEXT_HOP : F_ORIGINATOR;
            value = ip_text(v, 0);
            break;
        case 4: case 5:
            if (len != 4)
                goto fail;
            slot = code == 4 ? F_MED : F_LOCAL_PREF;
            value = PyLong_FromUnsignedLong(u32(v));
            break;
        case 6:
            if (len != 0)
                goto fail;
            slot = F_ATOMIC;
            value = Py_NewRef(Py_True);
            break;
        case 7:
            if (len != 8)
                goto fail;
            slot = F_AGGREGATOR;
            value = new_tuple(2);
            if (value != NULL) {
                PyObject *asn = PyLong_FromUnsignedLong(u32(v));
                PyObject *address = asn == NULL ? NULL : ip_text(v + 4, 0);
                PyTuple_SET_ITEM(value, 0, asn);
                PyTuple_SET_ITEM(value, 1, address);
                if (address == NULL)
                    Py_CLEAR(value);
            }
            break;
        case 8:
            if (len == 0 || len % 4)
                goto fail;
            slot = F_COMMUNITIES;
            value = number_groups(v, len, 2);
            break;
        case 10:
            if (len == 0 || len % 4)
                goto fail;
            slot = F_CLUSTER;
            value = pieces(v, len, 4);
            break;
        case 16:
            if (len == 0 || len % 8)
                goto fail;
            slot = F_EXT;
            value = pieces(v, len, 8);
            break;
        case 32:
            if (len == 0 || len % 12)
                goto fail;
            slot = F_LARGE;
            value = number_groups(v, len, 3);
            break;
        default:
            goto fail;
        }
        if (value == NULL)
            goto fail;
        if (f[slot] != NULL) {  /* a duplicate: the caller excludes them already */
            Py_DECREF(value);
            goto fail;
        }
        f[slot] = value;
    }
    f[F_WIRE] = Py_NewRef(wire);
    for (i = 0; i < N_FIELDS; i++) {
        if (f[i] != NULL)
            continue;
        switch (i) {
        case F_AS_PATH: case F_COMMUNITIES: case F_CLUSTER: case F_EXT: case F_LARGE:
        case F_UNKNOWN: case F_DISCARDED:
            f[i] = Py_NewRef(Empty_Tuple);
            break;
        case F_ATOMIC:
            f[i] = Py_NewRef(Py_False);
            break;
        default:
            f[i] = Py_NewRef(Py_None);
        }
    }
    return make(Attributes_T, N_FIELDS, f);
fail:
    for (i = 0; i < N_FIELDS; i++)
        Py_XDECREF(f[i]);
    return NULL;
}

/* ---- the UPDATE (message.decode_update) ---------------------------------- */

/* The fields of the BgpContext decode_update reads. */
typedef struct {
    PyObject *cache, *four_octet_as, *add_path, *cache_limit;
} Context;

static PyObject *
decode(const unsigned char *d, Py_ssize_t size, Py_ssize_t start, Py_ssize_t end, Context *ctx)
{
    Py_ssize_t withdrawn_end, attr_start, attr_end, pos, count = 0;
    Py_ssize_t reach_s = -1, reach_e = 0, unreach_s = -1, unreach_e = 0;
    Py_ssize_t cut_from[2], cut_to[2];
    int ncut = 0, odd = 0, ap4, ap6, miss = 0, unreach_afi = 0, n_ann = 0, n_wd = 0;
    unsigned char seen[32] = {0};
    PyObject *key = NULL, *cache = NULL, *attrs = NULL, *result = NULL, *eor;
    PyObject *announced[2] = {NULL, NULL}, *withdrawn[2] = {NULL, NULL};
    PyObject *items[4], *ann_t = NULL, *wd_t = NULL;
    int i;

    if (start < 0 || end > size || end - start < 4)
        return BAIL;
    withdrawn_end = start + 2 + u16(d + start);
    if (withdrawn_end + 2 > end)
        return BAIL;
    attr_start = withdrawn_end + 2;
    attr_end = attr_start + u16(d + withdrawn_end);
    if (attr_end > end)
        return BAIL;

    /* Walk the TLV headers exactly as message.decode_update does. */
    for (pos = attr_start; pos < attr_end; count++) {
        unsigned code;
        Py_ssize_t value, value_end;
        if (pos + 3 > attr_end)
            return BAIL;
        code = d[pos + 1];
        if (d[pos] & 0x10) {
            if (pos + 4 > attr_end)
                return BAIL;
            value = pos + 4;
            value_end = value + u16(d + pos + 2);
        }
        else {
            value = pos + 3;
            value_end = value + d[pos + 2];
        }
        if (value_end > attr_end)
            return BAIL;
        if (seen[code >> 3] & (1 << (code & 7))) {
            if (code == 14 || code == 15)
                return BAIL;  /* an error in Python */
            odd = 1;  /* only matters when the attributes must be decoded */
        }
        seen[code >> 3] |= 1 << (code & 7);
        if (code == 14 || code == 15) {
            if (code == 14) {
                reach_s = value;
                reach_e = value_end;
            }
            else {
                unreach_s = value;
                unreach_e = value_end;
            }
            cut_from[ncut] = pos;
            cut_to[ncut++] = value_end;
        }
        pos = value_end;
    }

    /* (afi, safi) in ctx.add_path, as Python asks it */
    ap4 = ap6 = 0;
    if (!(PyAnySet_CheckExact(ctx->add_path) && PySet_GET_SIZE(ctx->add_path) == 0)) {
        ap4 = PySequence_Contains(ctx->add_path, Key_V4);
        ap6 = ap4 < 0 ? -1 : PySequence_Contains(ctx->add_path, Key_V6);
        if (ap4 < 0 || ap6 < 0) {
            PyErr_Clear();
            return BAIL;
        }
    }

    if (attr_end > attr_start) {
        /* The cache key and Attributes.wire: the AS width, then the
           attribute block without the MP TLVs. */
        Py_ssize_t klen = attr_end - attr_start;
        int width = PyObject_IsTrue(ctx->four_octet_as);
        if (width < 0) {
            PyErr_Clear();
            return BAIL;
        }
        for (i = 0; i < ncut; i++)
            klen -= cut_to[i] - cut_from[i];
        if (klen > 0) {
            char *k;
            Py_ssize_t from = attr_start;
            key = PyBytes_FromStringAndSize(NULL, klen + 1);
            if (key == NULL)
                return NULL;
            k = PyBytes_AS_STRING(key);
            *k++ = (char)width;
            for (i = 0; i < ncut; i++) {
                memcpy(k, d + from, cut_from[i] - from);
                k += cut_from[i] - from;
                from = cut_to[i];
            }
            memcpy(k, d + from, attr_end - from);
            cache = ctx->cache;
            if (!PyDict_CheckExact(cache))
                goto done;
            attrs = PyDict_GetItemWithError(cache, key);
            if (attrs != NULL) {
                Py_INCREF(attrs);
            }
            else {
                if (PyErr_Occurred())
                    goto bail_clear;
                /* A 2-octet AS_PATH, or a duplicate attribute: Python decodes it. */
                if (ctx->four_octet_as != Py_True || odd)
                    goto done;
                attrs = decode_attributes(d, attr_start, attr_end, key);
                if (attrs == NULL)
                    goto done;
                miss = 1;
            }
        }
    }
    if (attrs == NULL)
        attrs = Py_NewRef(Empty_Attributes);
    else if (Py_TYPE(attrs) != Attributes_T)
        goto done;  /* the cache holds something else: let Python read it */

    if (withdrawn_end > start + 2) {
        withdrawn[n_wd] = route_set(1, Py_NewRef(Py_None),
                                    prefixes(d, start + 2, withdrawn_end, 0, ap4), Py_NewRef(Py_None));
        if (withdrawn[n_wd++] == NULL)
            goto done;
    }
    if (reach_s >= 0) {
        announced[n_ann] = mp_reach(d, reach_s, reach_e, ap4, ap6);
        if (announced[n_ann++] == NULL)
            goto done;
    }
    if (attr_end < end) {
        announced[n_ann] = route_set(1, Py_NewRef(PyTuple_GET_ITEM(attrs, F_NEXT_HOP)),
                                     prefixes(d, attr_end, end, 0, ap4), Py_NewRef(Py_None));
        if (announced[n_ann++] == NULL)
            goto done;
    }
    eor = Py_None;
    if (unreach_s >= 0) {
        PyObject *unreach = mp_unreach(d, unreach_s, unreach_e, ap4, ap6, &unreach_afi);
        if (unreach == NULL)
            goto done;
        if (PyTuple_GET_SIZE(PyTuple_GET_ITEM(unreach, 4)) > 0) {
            withdrawn[n_wd++] = unreach;
        }
        else {
            Py_DECREF(unreach);
            if (count == 1 && n_wd == 0 && n_ann == 0)
                eor = unreach_afi == 1 ? Fam_V4 : Fam_V6;
        }
    }
    else if (end == start + 4) {
        eor = Fam_V4;
    }

    ann_t = new_tuple(n_ann);
    wd_t = new_tuple(n_wd);
    if (ann_t == NULL || wd_t == NULL)
        goto done;
    for (i = 0; i < n_ann; i++) {
        PyTuple_SET_ITEM(ann_t, i, announced[i]);
        announced[i] = NULL;
    }
    for (i = 0; i < n_wd; i++) {
        PyTuple_SET_ITEM(wd_t, i, withdrawn[i]);
        withdrawn[i] = NULL;
    }
    if (miss) {
        /* Only now, with nothing left that could fail on the input: the cache
           ends up as the Python path leaves it (cleared when full, then set). */
        Py_ssize_t limit;
        if (!PyLong_Check(ctx->cache_limit))
            goto done;
        limit = PyLong_AsSsize_t(ctx->cache_limit);
        if (limit == -1 && PyErr_Occurred())
            goto bail_clear;
        if (PyDict_GET_SIZE(cache) >= limit)
            PyDict_Clear(cache);
        if (PyDict_SetItem(cache, key, attrs) < 0)
            goto done;
    }
    items[0] = attrs;
    items[1] = ann_t;
    items[2] = wd_t;
    items[3] = Py_NewRef(eor);
    attrs = ann_t = wd_t = NULL;
    result = make(Update_T, 4, items);
    goto done;

bail_clear:
    PyErr_Clear();
done:
    for (i = 0; i < 2; i++) {
        Py_XDECREF(announced[i]);
        Py_XDECREF(withdrawn[i]);
    }
    Py_XDECREF(ann_t);
    Py_XDECREF(wd_t);
    Py_XDECREF(attrs);
    Py_XDECREF(key);
    return result;
}

static PyObject *
fast_decode_update(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t start, end;
    PyObject *result;
    Context ctx;

    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "decode_update(data, start, end, cache, four_octet_as,"
                                         " add_path, cache_limit) takes 7 arguments");
        return NULL;
    }
    if (!Configured || !PyBytes_CheckExact(args[0]) || !PyLong_CheckExact(args[1])
        || !PyLong_CheckExact(args[2]))
        Py_RETURN_NONE;
    start = PyLong_AsSsize_t(args[1]);
    end = PyLong_AsSsize_t(args[2]);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    ctx.cache = args[3];
    ctx.four_octet_as = args[4];
    ctx.add_path = args[5];
    ctx.cache_limit = args[6];
    result = decode((const unsigned char *)PyBytes_AS_STRING(args[0]),
                    PyBytes_GET_SIZE(args[0]), start, end, &ctx);
    if (result == NULL && !PyErr_Occurred())
        Py_RETURN_NONE;
    return result;
}

/* ---- a whole Route Monitoring message (bmp.decode.decode_bmp) -------------- */

/* decode_bmp's hot path for a peer already in its peer cache (RFC 7854 §4.1,
   §4.2, §4.6): the common header, the per-peer header (its fields from the
   cache, the timestamp from the message), the BGP header, then decode().
   A peer not in the cache, any other message or any doubt: None, and
   decode_bmp runs (and fills the cache). */
static PyObject *
fast_route_monitoring(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    static const unsigned char marker[16] = {
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    const unsigned char *d;
    Py_ssize_t size, i;
    PyObject *key, *cached, *fields, *ctx_obj, *update, *stamp, *peer;
    PyObject *items[7];
    Context ctx = {NULL, NULL, NULL, NULL};

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "route_monitoring(msg, peer_cache) takes 2 arguments");
        return NULL;
    }
    if (!Configured || !Bmp_Configured || !PyBytes_CheckExact(args[0])
        || !PyDict_CheckExact(args[1]))
        Py_RETURN_NONE;
    d = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    size = PyBytes_GET_SIZE(args[0]);
    /* Common header (6), per-peer header (42), BGP header (19) of an UPDATE
       whose length is the rest of the message. */
    if (size < 67 || d[0] != 3 || (Py_ssize_t)u32(d + 1) != size || d[5] != 0
        || memcmp(d + 48, marker, 16) != 0 || (Py_ssize_t)u16(d + 64) != size - 48
        || d[66] != 2)
        Py_RETURN_NONE;
    key = PyBytes_FromStringAndSize((const char *)d + 6, 34);
    if (key == NULL)
        return NULL;
    cached = PyDict_GetItemWithError(args[1], key);
    Py_DECREF(key);
    if (cached == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    if (!PyTuple_CheckExact(cached) || PyTuple_GET_SIZE(cached) != 2)
        Py_RETURN_NONE;
    fields = PyTuple_GET_ITEM(cached, 0);
    ctx_obj = PyTuple_GET_ITEM(cached, 1);
    if (!PyTuple_CheckExact(fields) || PyTuple_GET_SIZE(fields) != 6)
        Py_RETURN_NONE;
    Py_INCREF(fields);  /* the cache may change while decode() runs Python code */
    Py_INCREF(ctx_obj);
    ctx.cache = PyObject_GetAttr(ctx_obj, Name_Cache);
    ctx.four_octet_as = PyObject_GetAttr(ctx_obj, Name_Four_Octet_As);
    ctx.add_path = PyObject_GetAttr(ctx_obj, Name_Add_Path);
    ctx.cache_limit = PyObject_GetAttr(ctx_obj, Name_Cache_Limit);
    update = NULL;
    if (ctx.cache != NULL && ctx.four_octet_as != NULL && ctx.add_path != NULL
        && ctx.cache_limit != NULL)
        update = decode(d, size, 67, size, &ctx);
    else
        PyErr_Clear();  /* not a BgpContext: decode_bmp says what is wrong */
    Py_XDECREF(ctx.cache);
    Py_XDECREF(ctx.four_octet_as);
    Py_XDECREF(ctx.add_path);
    Py_XDECREF(ctx.cache_limit);
    Py_DECREF(ctx_obj);
    if (update == NULL) {
        Py_DECREF(fields);
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    /* decode_bmp: seconds + micros / 1e6, the same double arithmetic. */
    stamp = PyFloat_FromDouble((double)u32(d + 40) + (double)u32(d + 44) / 1e6);
    if (stamp == NULL) {
        Py_DECREF(fields);
        Py_DECREF(update);
        return NULL;
    }
    for (i = 0; i < 6; i++)
        items[i] = Py_NewRef(PyTuple_GET_ITEM(fields, i));
    items[6] = stamp;
    Py_DECREF(fields);
    peer = make(PeerHeader_T, 7, items);
    if (peer == NULL) {
        Py_DECREF(update);
        return NULL;
    }
    items[0] = peer;
    items[1] = update;
    return make(RouteMonitoring_T, 2, items);
}

/* ---- configuration -------------------------------------------------------- */

/* A NamedTuple class with exactly the fields (names in order, space separated)
   this file fills in, whose instances are plain tuples in memory. */
static int
check_type(PyObject *cls, const char *fields)
{
    PyObject *names, *sep, *joined = NULL;
    int ok;
    if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, &PyTuple_Type)
        || ((PyTypeObject *)cls)->tp_basicsize != PyTuple_Type.tp_basicsize
        || ((PyTypeObject *)cls)->tp_itemsize != PyTuple_Type.tp_itemsize) {
        PyErr_SetString(PyExc_TypeError, "expected a NamedTuple class without extra storage");
        return -1;
    }
    names = PyObject_GetAttrString(cls, "_fields");
    sep = PyUnicode_FromString(" ");
    if (names != NULL && sep != NULL)
        joined = PyUnicode_Join(sep, names);
    ok = joined != NULL && PyUnicode_CompareWithASCIIString(joined, fields) == 0;
    Py_XDECREF(names);
    Py_XDECREF(sep);
    Py_XDECREF(joined);
    if (!ok && !PyErr_Occurred())
        PyErr_Format(PyExc_ValueError, "%R: fields are not \"%s\"", cls, fields);
    return ok ? 0 : -1;
}

static void
replace(PyObject **slot, PyObject *value)
{
    Py_XSETREF(*slot, Py_NewRef(value));
}

static PyObject *
configure(PyObject *module, PyObject *args)
{
    PyObject *update, *route_set_cls, *nlri, *attributes, *empty, *origins, *segtypes, *v4, *v6;
    int i;

    if (!PyArg_ParseTuple(args, "OOOOOO!O!UU:configure", &update, &route_set_cls, &nlri,
                          &attributes, &empty, &PyTuple_Type, &origins, &PyTuple_Type,
                          &segtypes, &v4, &v6))
        return NULL;
    if (check_type(update, "attributes announced withdrawn end_of_rib") < 0
        || check_type(route_set_cls, "afi safi afi_safi next_hop nlri link_local_next_hop raw") < 0
        || check_type(nlri, "prefix path_id rd labels evpn") < 0
        || check_type(attributes, ATTRIBUTE_FIELDS) < 0)
        return NULL;
    if ((PyObject *)Py_TYPE(empty) != attributes || PyTuple_GET_SIZE(origins) != 3
        || PyTuple_GET_SIZE(segtypes) != 4) {
        PyErr_SetString(PyExc_ValueError, "configure: unexpected constants");
        return NULL;
    }
    Configured = 0;
    replace((PyObject **)&Update_T, update);
    replace((PyObject **)&RouteSet_T, route_set_cls);
    replace((PyObject **)&Nlri_T, nlri);
    replace((PyObject **)&Attributes_T, attributes);
    replace(&Empty_Attributes, empty);
    for (i = 0; i < 3; i++)
        replace(&Origins[i], PyTuple_GET_ITEM(origins, i));
    for (i = 0; i < 4; i++)
        replace(&SegTypes[i + 1], PyTuple_GET_ITEM(segtypes, i));
    replace(&Fam_V4, v4);
    replace(&Fam_V6, v6);
    Configured = 1;
    Py_RETURN_NONE;
}

static PyObject *
configure_bmp(PyObject *module, PyObject *args)
{
    PyObject *peer_header, *route_monitoring;

    if (!PyArg_ParseTuple(args, "OO:configure_bmp", &peer_header, &route_monitoring))
        return NULL;
    if (check_type(peer_header, "peer_type flags distinguisher address asn bgp_id timestamp") < 0
        || check_type(route_monitoring, "peer update") < 0)
        return NULL;
    Bmp_Configured = 0;
    replace((PyObject **)&PeerHeader_T, peer_header);
    replace((PyObject **)&RouteMonitoring_T, route_monitoring);
    Bmp_Configured = 1;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(Update, RouteSet, Nlri, Attributes, EMPTY_ATTRIBUTES, origins, segment_types,"
     " ipv4_family, ipv6_family): bind the model types and constants (once, at import)."},
    {"decode_update", (PyCFunction)(void (*)(void))fast_decode_update, METH_FASTCALL,
     "decode_update(data, start, end, cache, four_octet_as, add_path, cache_limit) -> Update or"
     " None: the fields of a BgpContext; None means use the Python decoder."},
    {"configure_bmp", configure_bmp, METH_VARARGS,
     "configure_bmp(PeerHeader, RouteMonitoring): bind the BMP model types (once, at import)."},
    {"route_monitoring", (PyCFunction)(void (*)(void))fast_route_monitoring, METH_FASTCALL,
     "route_monitoring(msg, peer_cache) -> RouteMonitoring or None: decode_bmp for a Route"
     " Monitoring message of a cached peer; None means use decode_bmp."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pybmpmon._fastpath",
    .m_doc = "C accelerator for the common BGP UPDATE; pybmpmon.bgp.message is the reference.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__fastpath(void)
{
    PyObject *module;
    int i;
    for (i = 0; i < 256; i++)
        DecLen[i] = (unsigned char)snprintf(Dec[i], sizeof Dec[i], "%d", i);
    for (i = 0; i < 65536; i++) {
        int shift, n = 0;
        for (shift = 12; shift > 0 && !(i >> shift); shift -= 4)
            ;
        for (; shift >= 0; shift -= 4)
            Hex[i][n++] = "0123456789abcdef"[(i >> shift) & 15];
    }
    Own_Ipv6_Text = ipv6_self_check();
    Key_V4 = Py_BuildValue("(ii)", 1, 1);
    Key_V6 = Py_BuildValue("(ii)", 2, 1);
    Empty_Tuple = PyTuple_New(0);
    Name_Cache = PyUnicode_InternFromString("cache");
    Name_Four_Octet_As = PyUnicode_InternFromString("four_octet_as");
    Name_Add_Path = PyUnicode_InternFromString("add_path");
    Name_Cache_Limit = PyUnicode_InternFromString("cache_limit");
    if (!Key_V4 || !Key_V6 || !Empty_Tuple || !Name_Cache || !Name_Four_Octet_As
        || !Name_Add_Path || !Name_Cache_Limit)
        return NULL;
    module = PyModule_Create(&module_def);
    if (module != NULL && (PyModule_AddIntConstant(module, "OWN_IPV6_TEXT", Own_Ipv6_Text) < 0
                           || PyModule_AddIntConstant(module, "API_VERSION", API_VERSION) < 0))
        Py_CLEAR(module);
    return module;
}
