/*
 * pybmpmon._rowpath, second part: whole Route Monitoring events.
 *
 * route_events() does what rows.BatchBuilder.add_events' loop does for a run
 * of Route Monitoring events (_route_monitoring, _attrs, _route_set), for
 * the events of the usual shape:
 * - the peer is the builder's last one (BatchBuilder._last_peer), so its
 *   scope and bgp_peers key are known;
 * - no End-of-RIB;
 * - every route set that has routes is unicast (AFI 1/2, SAFI 1/2), named,
 *   and every route in it is simple (rp_simple_prefix).
 * The builder's state stays in its Python attributes; this code reads and
 * sets them exactly where the Python methods do, and calls back the Python
 * code for what is rare or not worth doing twice: the text of an attribute
 * set (rows.attribute_text), the digest of a set not decoded from the wire
 * (rows.attribute_digest; _digest.c does the others), Segment.ref and
 * BatchBuilder._close_segment.
 *
 * Strategy as in _rowpath.c: the Python code is the reference.  An event
 * of another shape stops the run before anything is changed, and the
 * caller's Python code takes it.  An exception means memory ran out or the
 * builder's state is not what rows.py makes it.
 */

#include "_rowpath.h"
#include <math.h>
#include <string.h>

/* Set by configure_events(): the classes and where their fields are. */
static PyTypeObject *Monitoring_T, *Peer_T, *Update_T, *Set_T, *Attrs_T;
static Py_ssize_t M_peer, M_update, M_size;
static Py_ssize_t P_type, P_flags, P_rd, P_address, P_asn, P_bgp_id, P_time, P_size;
static Py_ssize_t U_attributes, U_announced, U_withdrawn, U_eor, U_size;
static Py_ssize_t S_afi, S_safi, S_family, S_next_hop, S_nlri, S_size;
static Py_ssize_t A_next_hop, A_wire, A_size;
/* rows' globals, where attribute_digest and attribute_text are looked up at
   each call as Python code does (tests replace them); and the
   attribute_digest whose wire digests rp_wire_digest gives in C. */
static PyObject *Namespace, *Digest_F;
static double Sane_Past, Sane_Future;  /* operations.SANE_PAST, SANE_FUTURE */

/* The attributes of BatchBuilder and Segment this code uses, interned. */
enum {
    N_last_peer, N_head_at, N_head_received, N_head, N_days, N_segment, N_peers,
    N_last_scope, N_ref, N_gens, N_lines, N_attrs, N_routes, N_max_gen, N_close_segment,
    N_last_attrs, N_last_next_hop, N_last_digest, N_stored, N_attr_digests, N_route_count,
    N_attribute_digest, N_attribute_text, N_COUNT
};
static const char *const Name_Text[N_COUNT] = {
    "_last_peer", "_head_at", "_head_received", "_head", "days", "segment", "peers",
    "_last_scope", "ref", "gens", "lines", "attrs", "routes", "max_gen", "_close_segment",
    "_last_attrs", "_last_next_hop", "_last_digest", "_stored", "attr_digests", "route_count",
    "attribute_digest", "attribute_text"};
static PyObject *Names[N_COUNT];

#define GET(obj, name) PyObject_GetAttr((obj), Names[name])
#define SET(obj, name, value) PyObject_SetAttr((obj), Names[name], (value))
#define FIELD(tuple, i) PyTuple_GET_ITEM((tuple), (i))

/* The builder's attributes live in its instance dictionary (BatchBuilder
   has no slots, and no descriptors of these names): read and set there,
   skipping the generic attribute lookup. */
static PyObject *
bget(PyObject *state, int name)
{
    PyObject *value = PyDict_GetItemWithError(state, Names[name]);
    if (value == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetObject(PyExc_AttributeError, Names[name]);
        return NULL;
    }
    return Py_NewRef(value);
}

#define BGET(name) bget(state, (name))
#define BSET(name, value) PyDict_SetItem(state, Names[name], (value))

int
rp_events_init(void)
{
    for (int i = 0; i < N_COUNT; i++)
        if ((Names[i] = PyUnicode_InternFromString(Name_Text[i])) == NULL)
            return -1;
    return 0;
}

/* ---- checks: nothing is changed before they all pass --------------------- */

static int
is_one_or_two(PyObject *value)
{
    long v;
    if (!PyLong_CheckExact(value))
        return 0;
    v = PyLong_AsLong(value);
    if (v == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return v == 1 || v == 2;
}

/* Whether every route set with routes is unicast, named, of simple routes. */
static int
sets_handled(PyObject *sets)
{
    if (!PyTuple_CheckExact(sets))
        return 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(sets); i++) {
        PyObject *rs = PyTuple_GET_ITEM(sets, i), *nlris, *family;
        if (Py_TYPE(rs) != Set_T || PyTuple_GET_SIZE(rs) != S_size)
            return 0;
        nlris = FIELD(rs, S_nlri);
        if (!PyTuple_CheckExact(nlris))
            return 0;
        if (PyTuple_GET_SIZE(nlris) == 0)
            continue;  /* "if rs.nlri": skipped */
        family = FIELD(rs, S_family);
        if (!is_one_or_two(FIELD(rs, S_afi)) || !is_one_or_two(FIELD(rs, S_safi))
            || !PyUnicode_CheckExact(family) || PyUnicode_GET_LENGTH(family) == 0)
            return 0;
        for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(nlris); j++)
            if (rp_simple_prefix(PyTuple_GET_ITEM(nlris, j)) == NULL)
                return 0;
    }
    return 1;
}

/* BatchBuilder._peer's first case: the builder's last peer is this one.
   1 yes, 0 no, -1 error. */
static int
is_last_peer(PyObject *last, PyObject *peer, PyObject *router_ip)
{
    int r;
    if (!PyTuple_CheckExact(last) || PyTuple_GET_SIZE(last) != 6
        || FIELD(last, 0) != FIELD(peer, P_address))
        return 0;
    if ((r = PyObject_RichCompareBool(router_ip, FIELD(last, 1), Py_EQ)) != 1)
        return r;
    if ((r = PyObject_RichCompareBool(FIELD(peer, P_flags), FIELD(last, 2), Py_EQ)) != 1)
        return r;
    if ((r = PyObject_RichCompareBool(FIELD(peer, P_type), FIELD(last, 3), Py_EQ)) != 1)
        return r;
    return PyObject_RichCompareBool(FIELD(peer, P_rd), FIELD(last, 4), Py_EQ);
}

/* ---- the builder's steps ------------------------------------------------ */

/* Python's float // for a positive divisor (Objects/floatobject.c). */
static double
floor_divide(double vx, double wx)
{
    double mod = fmod(vx, wx), div = (vx - mod) / wx, floordiv;
    if (mod && (wx < 0) != (mod < 0))
        div -= 1.0;
    if (div) {
        floordiv = floor(div);
        if (div - floordiv > 0.5)
            floordiv += 1.0;
    }
    else
        floordiv = copysign(0.0, vx / wx);
    return floordiv;
}

/* _route_monitoring's head: "\t{at:.6f}\t{received_at:.6f}\t" and the day,
   unless the last UPDATE had the same times.  Returns the head (new ref). */
static PyObject *
head_of(PyObject *state, PyObject *at, PyObject *received)
{
    PyObject *head_at, *head_received, *head, *days, *day;
    int same;
    char *at_text, *received_text;

    if ((head_at = BGET(N_head_at)) == NULL)
        return NULL;
    if ((head_received = BGET(N_head_received)) == NULL) {
        Py_DECREF(head_at);
        return NULL;
    }
    /* Anything but floats counts as other times: formatting again gives
       the same text. */
    same = PyFloat_CheckExact(head_at) && PyFloat_CheckExact(head_received)
           && PyFloat_AS_DOUBLE(head_at) == PyFloat_AS_DOUBLE(at)
           && PyFloat_AS_DOUBLE(head_received) == PyFloat_AS_DOUBLE(received);
    Py_DECREF(head_at);
    Py_DECREF(head_received);
    if (!same) {
        day = PyLong_FromDouble(floor_divide(PyFloat_AS_DOUBLE(at), 86400.0));
        if (day == NULL)
            return NULL;
        days = BGET(N_days);
        if (days == NULL || !PySet_Check(days) || PySet_Add(days, day) < 0) {
            if (days != NULL && !PySet_Check(days))
                PyErr_SetString(PyExc_TypeError, "route_events: builder.days is not a set");
            Py_XDECREF(days);
            Py_DECREF(day);
            return NULL;
        }
        Py_DECREF(days);
        Py_DECREF(day);
        at_text = PyOS_double_to_string(PyFloat_AS_DOUBLE(at), 'f', 6, 0, NULL);
        received_text = PyOS_double_to_string(PyFloat_AS_DOUBLE(received), 'f', 6, 0, NULL);
        head = at_text && received_text
               ? PyUnicode_FromFormat("\t%s\t%s\t", at_text, received_text) : NULL;
        PyMem_Free(at_text);
        PyMem_Free(received_text);
        if (head == NULL)
            return PyErr_Occurred() ? NULL : PyErr_NoMemory();
        if (BSET(N_head_at, at) < 0 || BSET(N_head_received, received) < 0
            || BSET(N_head, head) < 0) {
            Py_DECREF(head);
            return NULL;
        }
        return head;
    }
    head = BGET(N_head);
    if (head != NULL && !(PyUnicode_CheckExact(head) && PyUnicode_IS_ASCII(head))) {
        PyErr_SetString(PyExc_TypeError, "route_events: builder._head is not ASCII text");
        Py_CLEAR(head);
    }
    return head;
}

/* The function `name` of rows (borrowed), or NULL with an exception. */
static PyObject *
rows_function(int name)
{
    PyObject *found = PyDict_GetItemWithError(Namespace, Names[name]);
    if (found == NULL && !PyErr_Occurred())
        PyErr_Format(PyExc_NameError, "route_events: rows has no %U", Names[name]);
    return found;
}

/* rows.attribute_digest(attrs, next_hop), in C for a wire set.  New ref. */
static PyObject *
call_digest(PyObject *attrs, PyObject *next_hop)
{
    PyObject *args[2] = {attrs, next_hop}, *digest = NULL;
    PyObject *function = rows_function(N_attribute_digest);
    if (function == NULL)
        return NULL;
    if (function == Digest_F)
        digest = rp_wire_digest(next_hop, FIELD(attrs, A_wire));
    if (digest == NULL && !PyErr_Occurred())
        digest = PyObject_Vectorcall(function, args, 2, NULL);
    return digest;
}

/* BatchBuilder._attrs: the set's digest (new ref), its line added to the
   segment when no batch sent it yet. */
static PyObject *
digest_of(PyObject *state, PyObject *attrs, PyObject *next_hop)
{
    PyObject *digest = NULL, *stored = NULL, *sent = NULL, *text = NULL, *line = NULL;
    PyObject *segment = NULL, *lines = NULL, *last;
    int hit = 0, known;

    if ((last = BGET(N_last_attrs)) == NULL)
        return NULL;
    if (last == attrs) {
        PyObject *last_hop = BGET(N_last_next_hop);
        hit = last_hop == NULL ? -1 : PyObject_RichCompareBool(next_hop, last_hop, Py_EQ);
        Py_XDECREF(last_hop);
    }
    Py_DECREF(last);
    if (hit < 0)
        return NULL;
    if (hit)
        digest = BGET(N_last_digest);
    else {
        digest = call_digest(attrs, next_hop);
        if (digest != NULL
            && (BSET(N_last_attrs, attrs) < 0
                || BSET(N_last_next_hop, next_hop) < 0
                || BSET(N_last_digest, digest) < 0))
            Py_CLEAR(digest);
    }
    if (digest == NULL)
        return NULL;
    if ((stored = BGET(N_stored)) == NULL || (sent = BGET(N_attr_digests)) == NULL)
        goto error;
    if (!PyAnySet_Check(stored) || !PySet_Check(sent)) {
        PyErr_SetString(PyExc_TypeError, "route_events: the builder's digests are not sets");
        goto error;
    }
    known = PySet_Contains(stored, digest);
    if (known == 0)
        known = PySet_Contains(sent, digest);
    if (known < 0)
        goto error;
    if (!known) {
        PyObject *args[2] = {attrs, next_hop}, *function = rows_function(N_attribute_text);
        if (function == NULL || (text = PyObject_Vectorcall(function, args, 2, NULL)) == NULL)
            goto error;
        if (!PyUnicode_Check(text)) {
            PyErr_SetString(PyExc_TypeError, "route_events: attribute_text gave no str");
            goto error;
        }
        /* f"{digest}\t{attribute_text(attrs, next_hop)}\n" */
        if ((line = PyUnicode_FromFormat("%S\t%U\n", digest, text)) == NULL
            || (segment = BGET(N_segment)) == NULL
            || (lines = GET(segment, N_attrs)) == NULL
            || PyList_Append(lines, line) < 0 || PySet_Add(sent, digest) < 0)
            goto error;
    }
    Py_DECREF(stored);
    Py_DECREF(sent);
    Py_XDECREF(text);
    Py_XDECREF(line);
    Py_XDECREF(segment);
    Py_XDECREF(lines);
    return digest;
error:
    Py_DECREF(digest);
    Py_XDECREF(stored);
    Py_XDECREF(sent);
    Py_XDECREF(text);
    Py_XDECREF(line);
    Py_XDECREF(segment);
    Py_XDECREF(lines);
    return NULL;
}

/* obj.<name> += value, or (raise_to) obj.<name> = value when higher; obj
   is a Segment, or the builder's state (a dict) when state is not NULL. */
static int
bump(PyObject *obj, PyObject *state, int name, Py_ssize_t value, int raise_to)
{
    PyObject *old = state != NULL ? BGET(name) : GET(obj, name), *new;
    Py_ssize_t v;
    int r;
    if (old == NULL)
        return -1;
    v = PyLong_AsSsize_t(old);
    Py_DECREF(old);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (raise_to && value <= v)
        return 0;
    if ((new = PyLong_FromSsize_t(raise_to ? value : v + value)) == NULL)
        return -1;
    r = state != NULL ? BSET(name, new) : SET(obj, name, new);
    Py_DECREF(new);
    return r;
}

/* "{segment.ref(ref_key)}\t" (new ref). */
static PyObject *
sref_text(PyObject *segment, PyObject *ref_key)
{
    PyObject *ref = PyObject_CallMethodOneArg(segment, Names[N_ref], ref_key), *text;
    if (ref == NULL)
        return NULL;
    text = PyUnicode_FromFormat("%S\t", ref);
    Py_DECREF(ref);
    return text;
}

/* (scope, ref_key, sref, gens) of the route set (_route_set's first lines):
   the builder's last scope when the run goes on, else made and kept there.
   New ref. */
static PyObject *
scope_of(PyObject *state, PyObject *segment, PyObject *scope_head, PyObject *family,
         PyObject *asn)
{
    PyObject *last, *scope = NULL, *ref_key = NULL, *sref = NULL, *all_gens = NULL;
    PyObject *gens = NULL, *info = NULL, *new_last;
    int r = 1;

    if ((last = BGET(N_last_scope)) == NULL)
        return NULL;
    if (PyTuple_CheckExact(last) && PyTuple_GET_SIZE(last) == 5 && FIELD(last, 0) == segment
        && FIELD(last, 1) == scope_head
        && (r = PyObject_RichCompareBool(FIELD(last, 2), family, Py_EQ)) == 1
        && (r = PyObject_RichCompareBool(FIELD(last, 3), asn, Py_EQ)) == 1) {
        info = Py_NewRef(FIELD(last, 4));
        Py_DECREF(last);
        if (!PyTuple_CheckExact(info) || PyTuple_GET_SIZE(info) != 4) {
            PyErr_SetString(PyExc_TypeError, "route_events: builder._last_scope is malformed");
            Py_CLEAR(info);
        }
        return info;
    }
    Py_DECREF(last);
    if (r < 0)
        return NULL;
    /* scope = scope_head + (family,); ref_key = scope + (asn,) */
    if ((scope = PyTuple_New(PyTuple_GET_SIZE(scope_head) + 1)) == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(scope_head); i++)
        PyTuple_SET_ITEM(scope, i, Py_NewRef(PyTuple_GET_ITEM(scope_head, i)));
    PyTuple_SET_ITEM(scope, PyTuple_GET_SIZE(scope_head), Py_NewRef(family));
    if ((ref_key = PyTuple_New(PyTuple_GET_SIZE(scope) + 1)) == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(scope); i++)
        PyTuple_SET_ITEM(ref_key, i, Py_NewRef(PyTuple_GET_ITEM(scope, i)));
    PyTuple_SET_ITEM(ref_key, PyTuple_GET_SIZE(scope), Py_NewRef(asn));
    if ((sref = sref_text(segment, ref_key)) == NULL
        || (all_gens = GET(segment, N_gens)) == NULL)
        goto done;
    if (!PyDict_Check(all_gens)) {
        PyErr_SetString(PyExc_TypeError, "route_events: segment.gens is not a dict");
        goto done;
    }
    gens = PyDict_GetItemWithError(all_gens, scope);
    if (gens != NULL)
        Py_INCREF(gens);
    else if (PyErr_Occurred() || (gens = PyDict_New()) == NULL
             || PyDict_SetItem(all_gens, scope, gens) < 0)
        goto done;
    if (!PyDict_CheckExact(gens)) {
        PyErr_SetString(PyExc_TypeError, "route_events: a scope's generations are not a dict");
        goto done;
    }
    if ((info = PyTuple_Pack(4, scope, ref_key, sref, gens)) == NULL)
        goto done;
    new_last = PyTuple_Pack(5, segment, scope_head, family, asn, info);
    if (new_last == NULL || BSET(N_last_scope, new_last) < 0)
        Py_CLEAR(info);
    Py_XDECREF(new_last);
done:
    Py_XDECREF(scope);
    Py_XDECREF(ref_key);
    Py_XDECREF(sref);
    Py_XDECREF(all_gens);
    Py_XDECREF(gens);
    return info;
}

/* The Python loop's branch for a key reaching max_gen: a new segment, its
   sref and generations.  *segment, *pre, *gens, *lines are replaced. */
static int
new_segment(PyObject *builder, PyObject *state, PyObject *head, PyObject *scope, PyObject *ref_key,
            PyObject **segment, PyObject **pre, PyObject **gens, PyObject **lines)
{
    PyObject *result, *sref, *all_gens;

    if ((result = PyObject_CallMethodNoArgs(builder, Names[N_close_segment])) == NULL)
        return -1;
    Py_DECREF(result);
    Py_SETREF(*segment, BGET(N_segment));
    if (*segment == NULL || (sref = sref_text(*segment, ref_key)) == NULL)
        return -1;
    Py_SETREF(*pre, PyUnicode_Concat(head, sref));
    Py_DECREF(sref);
    Py_SETREF(*gens, PyDict_New());
    Py_SETREF(*lines, GET(*segment, N_lines));
    if (*pre == NULL || *gens == NULL || *lines == NULL)
        return -1;
    if ((all_gens = GET(*segment, N_gens)) == NULL)
        return -1;
    if (PyObject_SetItem(all_gens, scope, *gens) < 0) {
        Py_DECREF(all_gens);
        return -1;
    }
    Py_DECREF(all_gens);
    if (!PyList_CheckExact(*lines)) {
        PyErr_SetString(PyExc_TypeError, "route_events: segment.lines is not a list");
        return -1;
    }
    return 0;
}

/* rows.py's simple tail: f"\t0\t{NULL}\t{flag}\t{digest}\t{NULL}\t{_NO_EVPN}\n". */
static PyObject *
simple_tail(char flag, const char *digest, Py_ssize_t digest_len)
{
    static const char before[] = "\t0\t\\N\t", after[] = "\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\n";
    Py_ssize_t n1 = sizeof before - 1, n2 = sizeof after - 1;
    PyObject *tail = PyUnicode_New(n1 + 2 + digest_len + n2, 127);
    char *p;
    if (tail == NULL)
        return NULL;
    p = (char *)PyUnicode_DATA(tail);
    memcpy(p, before, n1);
    p += n1;
    *p++ = flag;
    *p++ = '\t';
    memcpy(p, digest, digest_len);
    memcpy(p + digest_len, after, n2);
    return tail;
}

/* BatchBuilder._route_set for a set sets_handled() accepted; digest: the
   attr_hash text ("\\N" for a withdrawal), ASCII. */
static int
route_set(PyObject *builder, PyObject *state, PyObject *rs, PyObject *head, PyObject *scope_head,
          PyObject *asn, char flag, const char *digest, Py_ssize_t digest_len)
{
    PyObject *nlris = FIELD(rs, S_nlri), *family = FIELD(rs, S_family);
    PyObject *segment, *info, *scope, *ref_key, *gens = NULL, *pre = NULL, *tail = NULL;
    PyObject *lines = NULL, *count;
    Py_ssize_t n = PyTuple_GET_SIZE(nlris), i = 0, max_gen;
    int r = -1;

    if ((segment = BGET(N_segment)) == NULL)
        return -1;
    if ((info = scope_of(state, segment, scope_head, family, asn)) == NULL) {
        Py_DECREF(segment);
        return -1;
    }
    scope = FIELD(info, 0);
    ref_key = FIELD(info, 1);
    gens = Py_NewRef(FIELD(info, 3));
    if ((count = BGET(N_max_gen)) == NULL)
        goto done;
    max_gen = PyLong_AsSsize_t(count);
    Py_DECREF(count);
    if (max_gen == -1 && PyErr_Occurred())
        goto done;
    /* pre = head + sref; the simple tail of rows.py */
    if ((pre = PyUnicode_Concat(head, FIELD(info, 2))) == NULL
        || (tail = simple_tail(flag, digest, digest_len)) == NULL
        || (lines = GET(segment, N_lines)) == NULL)
        goto done;
    if (!PyList_CheckExact(lines) || !PyDict_CheckExact(gens) || !PyUnicode_IS_ASCII(pre)
        || !PyUnicode_IS_ASCII(tail)) {
        PyErr_SetString(PyExc_TypeError, "route_events: the segment is not what rows.py makes");
        goto done;
    }
    while (1) {
        Py_ssize_t top = 0;
        Py_ssize_t stop = rp_emit_routes(lines, gens, &PyTuple_GET_ITEM(nlris, 0), n, i, pre,
                                         tail, max_gen, &top);
        if (stop < 0 || bump(segment, NULL, N_routes, stop - i, 0) < 0
            || (top > 0 && bump(segment, NULL, N_max_gen, top, 1) < 0))
            goto done;
        if (stop == n)
            break;
        if (stop == i && PyDict_GET_SIZE(gens) == 0) {
            /* A fresh segment took nothing: not a generation limit. */
            PyErr_SetString(PyExc_SystemError, "route_events: a simple route was refused");
            goto done;
        }
        if (new_segment(builder, state, head, scope, ref_key, &segment, &pre, &gens, &lines) < 0)
            goto done;
        i = stop;
    }
    r = bump(NULL, state, N_route_count, n, 0);
done:
    Py_XDECREF(segment);
    Py_DECREF(info);
    Py_XDECREF(gens);
    Py_XDECREF(pre);
    Py_XDECREF(tail);
    Py_XDECREF(lines);
    return r;
}

/* ---- one event, then the module's functions ----------------------------- */

/* BatchBuilder._route_monitoring: 1 done, 0 not this shape (nothing
   changed), -1 error. */
static int
route_monitoring(PyObject *builder, PyObject *state, PyObject *router_ip, PyObject *event, PyObject *received)
{
    PyObject *peer, *update, *attrs, *announced, *withdrawn, *stamp, *at, *last, *found;
    PyObject *scope_head, *peer_key, *asn, *head = NULL, *segment = NULL, *peers = NULL;
    PyObject *value = NULL;
    Py_ssize_t i;
    int r;

    if (Py_TYPE(event) != Monitoring_T || PyTuple_GET_SIZE(event) != M_size)
        return 0;
    peer = FIELD(event, M_peer);
    update = FIELD(event, M_update);
    if (Py_TYPE(peer) != Peer_T || PyTuple_GET_SIZE(peer) != P_size
        || Py_TYPE(update) != Update_T || PyTuple_GET_SIZE(update) != U_size
        || FIELD(update, U_eor) != Py_None)
        return 0;
    attrs = FIELD(update, U_attributes);
    announced = FIELD(update, U_announced);
    withdrawn = FIELD(update, U_withdrawn);
    stamp = FIELD(peer, P_time);
    if (Py_TYPE(attrs) != Attrs_T || PyTuple_GET_SIZE(attrs) != A_size
        || !PyFloat_CheckExact(stamp) || !sets_handled(withdrawn) || !sets_handled(announced))
        return 0;
    /* operations.sane_time */
    {
        double h = PyFloat_AS_DOUBLE(stamp), t = PyFloat_AS_DOUBLE(received);
        at = h != 0.0 && t - Sane_Past <= h && h <= t + Sane_Future ? stamp : received;
    }
    if (!isfinite(PyFloat_AS_DOUBLE(at)))
        return 0;
    if ((last = BGET(N_last_peer)) == NULL)
        return -1;
    r = is_last_peer(last, peer, router_ip);
    found = r == 1 ? FIELD(last, 5) : NULL;
    if (found != NULL && !(PyTuple_CheckExact(found) && PyTuple_GET_SIZE(found) == 2
                           && PyTuple_CheckExact(FIELD(found, 0))))
        r = 0;
    if (r != 1) {
        Py_DECREF(last);
        return r;
    }
    /* From here on the event is this code's. */
    scope_head = FIELD(found, 0);
    peer_key = FIELD(found, 1);
    asn = FIELD(peer, P_asn);
    r = -1;
    if ((head = head_of(state, at, received)) == NULL
        || (segment = BGET(N_segment)) == NULL || (peers = GET(segment, N_peers)) == NULL)
        goto done;
    /* seg.peers[peer_key] = (asn, bgp_id, at), unless it holds these already */
    if (PyDict_CheckExact(peers)
        && (value = PyDict_GetItemWithError(peers, peer_key)) != NULL && PyTuple_CheckExact(value)
        && PyTuple_GET_SIZE(value) == 3 && FIELD(value, 0) == asn
        && FIELD(value, 1) == FIELD(peer, P_bgp_id) && PyFloat_CheckExact(FIELD(value, 2))
        && PyFloat_AS_DOUBLE(FIELD(value, 2)) == PyFloat_AS_DOUBLE(at))
        value = NULL;  /* an equal tuple: storing it again changes nothing */
    else if (PyErr_Occurred()
             || (value = PyTuple_Pack(3, asn, FIELD(peer, P_bgp_id), at)) == NULL
             || PyObject_SetItem(peers, peer_key, value) < 0)
        goto done;
    for (i = 0; i < PyTuple_GET_SIZE(withdrawn); i++) {
        PyObject *rs = PyTuple_GET_ITEM(withdrawn, i);
        if (PyTuple_GET_SIZE(FIELD(rs, S_nlri)) > 0
            && route_set(builder, state, rs, head, scope_head, asn, 't', "\\N", 2) < 0)
            goto done;
    }
    for (i = 0; i < PyTuple_GET_SIZE(announced); i++) {
        PyObject *rs = PyTuple_GET_ITEM(announced, i), *next_hop, *digest;
        long long number;
        char text[24];
        int truth;
        if (PyTuple_GET_SIZE(FIELD(rs, S_nlri)) == 0)
            continue;
        /* rs.next_hop or attrs.next_hop */
        next_hop = FIELD(rs, S_next_hop);
        if ((truth = PyObject_IsTrue(next_hop)) < 0)
            goto done;
        if (!truth)
            next_hop = FIELD(attrs, A_next_hop);
        if ((digest = digest_of(state, attrs, next_hop)) == NULL)
            goto done;
        /* f"{digest}": digests are 64-bit (attribute_digest) */
        number = PyLong_AsLongLong(digest);
        Py_DECREF(digest);
        if ((number == -1 && PyErr_Occurred())
            || route_set(builder, state, rs, head, scope_head, asn, 'f', text,
                         rp_format_i64(text, number)) < 0)
            goto done;
    }
    r = 1;
done:
    Py_DECREF(last);
    Py_XDECREF(head);
    Py_XDECREF(segment);
    Py_XDECREF(peers);
    Py_XDECREF(value);
    return r;
}

/* route_events(builder, router_ip, events, start, received_at) -> stop */
PyObject *
rp_route_events(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *builder, *router_ip, *events, *received, *state;
    Py_ssize_t i;

    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError,
                        "route_events(builder, router_ip, events, start, received_at) takes 5"
                        " arguments");
        return NULL;
    }
    builder = args[0];
    router_ip = args[1];
    events = args[2];
    received = args[4];
    i = PyLong_AsSsize_t(args[3]);
    if (i == -1 && PyErr_Occurred())
        return NULL;
    if (i < 0) {
        PyErr_SetString(PyExc_ValueError, "route_events: start is negative");
        return NULL;
    }
    if (Monitoring_T == NULL || !PyFloat_CheckExact(received) || !PyUnicode_CheckExact(router_ip)
        || !(PyList_CheckExact(events) || PyTuple_CheckExact(events)))
        return PyLong_FromSsize_t(i);  /* the caller's loop takes them all */
    if ((state = PyObject_GenericGetDict(builder, NULL)) == NULL)
        return NULL;
    if (!PyDict_CheckExact(state)) {
        Py_DECREF(state);
        return PyLong_FromSsize_t(i);
    }
    /* The size is read again each time: the Python code called back could
       (though rows.py does not) change a list. */
    for (; i < PySequence_Fast_GET_SIZE(events); i++) {
        PyObject *event = Py_NewRef(PySequence_Fast_GET_ITEM(events, i));
        int r = route_monitoring(builder, state, router_ip, event, received);
        Py_DECREF(event);
        if (r < 0) {
            Py_DECREF(state);
            return NULL;
        }
        if (r == 0)
            break;
    }
    Py_DECREF(state);
    return PyLong_FromSsize_t(i);
}

/* configure_events(RouteMonitoring, PeerHeader, Update, RouteSet, Attributes,
   namespace, attribute_digest, sane_past, sane_future) */
PyObject *
rp_configure_events(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    static const char *const names[] = {
        "peer", "update", NULL,
        "peer_type", "flags", "distinguisher", "address", "asn", "bgp_id", "timestamp", NULL,
        "attributes", "announced", "withdrawn", "end_of_rib", NULL,
        "afi", "safi", "afi_safi", "next_hop", "nlri", NULL,
        "next_hop", "wire", NULL};
    Py_ssize_t *slots[] = {
        &M_peer, &M_update, NULL,
        &P_type, &P_flags, &P_rd, &P_address, &P_asn, &P_bgp_id, &P_time, NULL,
        &U_attributes, &U_announced, &U_withdrawn, &U_eor, NULL,
        &S_afi, &S_safi, &S_family, &S_next_hop, &S_nlri, NULL,
        &A_next_hop, &A_wire, NULL};
    Py_ssize_t *sizes[] = {&M_size, &P_size, &U_size, &S_size, &A_size};
    Py_ssize_t found[sizeof names / sizeof names[0]], size[5];
    double past, future;
    int cls = 0;

    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "configure_events takes 9 arguments");
        return NULL;
    }
    for (int c = 0; c < 5; c++)
        if (!PyType_Check(args[c]) || !PyType_IsSubtype((PyTypeObject *)args[c], &PyTuple_Type)) {
            PyErr_SetString(PyExc_TypeError, "configure_events: expected NamedTuple classes");
            return NULL;
        }
    if (!PyDict_Check(args[5]) || !PyCallable_Check(args[6])) {
        PyErr_SetString(PyExc_TypeError, "configure_events: expected a namespace and a function");
        return NULL;
    }
    past = PyFloat_AsDouble(args[7]);
    future = PyFloat_AsDouble(args[8]);
    if (PyErr_Occurred())
        return NULL;
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        if (names[k] == NULL) {
            PyObject *fields = PyObject_GetAttrString(args[cls], "_fields");
            if (fields == NULL)
                return NULL;
            size[cls] = PyTuple_Check(fields) ? PyTuple_GET_SIZE(fields) : -1;
            Py_DECREF(fields);
            cls++;
            continue;
        }
        if ((found[k] = rp_field_index(args[cls], names[k], "configure_events")) < 0)
            return NULL;  /* what was configured before stays */
    }
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++)
        if (slots[k] != NULL)
            *slots[k] = found[k];
    for (int c = 0; c < 5; c++)
        *sizes[c] = size[c];
    Py_XSETREF(Monitoring_T, (PyTypeObject *)Py_NewRef(args[0]));
    Py_XSETREF(Peer_T, (PyTypeObject *)Py_NewRef(args[1]));
    Py_XSETREF(Update_T, (PyTypeObject *)Py_NewRef(args[2]));
    Py_XSETREF(Set_T, (PyTypeObject *)Py_NewRef(args[3]));
    Py_XSETREF(Attrs_T, (PyTypeObject *)Py_NewRef(args[4]));
    Py_XSETREF(Namespace, Py_NewRef(args[5]));
    Py_XSETREF(Digest_F, Py_NewRef(args[6]));
    Sane_Past = past;
    Sane_Future = future;
    Py_RETURN_NONE;
}
