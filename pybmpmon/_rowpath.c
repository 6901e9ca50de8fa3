/*
 * pybmpmon._rowpath: optional C accelerator for the store's batch builder.
 *
 * Implements, for the shapes nearly all of a table has:
 * - the inner loop of pybmpmon/store/rows.py BatchBuilder._route_set for
 *   unicast routes without labels or path identifier: each becomes one line
 *   of the stage table's COPY text and bumps its generation in the
 *   segment's dictionary, exactly as the Python loop does;
 * - rows.attribute_text for sets without extended communities, ORIGINATOR_ID
 *   or CLUSTER_LIST;
 * - with _rowevents.c, whole Route Monitoring events (BatchBuilder.add_events'
 *   loop), and with _digest.c, the digest of a set decoded from the wire.
 *
 * Strategy: the Python code is the reference.  route_lines stops at the
 * first route it does not handle (another shape, non-ASCII text, a key that
 * would reach the segment's generation limit) and tells the caller where, so
 * the caller runs its own code for that route and calls again;
 * attribute_text returns None for a set it does not handle.  Neither fails
 * on input; an exception means memory ran out.
 */

#include "_rowpath.h"
#include <string.h>

/* Bumped whenever route_lines changes its arguments or result, so that
   pybmpmon.store.rows ignores a stale build instead of calling it wrongly. */
#define API_VERSION 3

/* The prefix of a simple route (an Nlri tuple: prefix, path_id, rd, labels,
   evpn), or NULL when the Python loop must take it. */
PyObject *
rp_simple_prefix(PyObject *nlri)
{
    PyObject *prefix, *path_id, *labels;

    if (!PyTuple_Check(nlri) || PyTuple_GET_SIZE(nlri) < 4)
        return NULL;
    prefix = PyTuple_GET_ITEM(nlri, 0);
    path_id = PyTuple_GET_ITEM(nlri, 1);
    labels = PyTuple_GET_ITEM(nlri, 3);
    if (!PyUnicode_CheckExact(prefix) || !PyUnicode_IS_ASCII(prefix))
        return NULL;
    /* rows.py: "nlri.path_id or 0" is 0, "not nlri.labels" holds. */
    if (path_id != Py_None) {
        int overflow;
        if (!PyLong_CheckExact(path_id) || PyLong_AsLongAndOverflow(path_id, &overflow) != 0
            || overflow)
            return NULL;
    }
    if (!PyTuple_CheckExact(labels) || PyTuple_GET_SIZE(labels) != 0)
        return NULL;
    return prefix;
}

Py_ssize_t
rp_emit_routes(PyObject *lines, PyObject *gens, PyObject *const *items, Py_ssize_t n,
               Py_ssize_t start, PyObject *pre, PyObject *tail, Py_ssize_t max_gen,
               Py_ssize_t *top)
{
    const char *pre_text = (const char *)PyUnicode_DATA(pre);
    const char *tail_text = (const char *)PyUnicode_DATA(tail);
    Py_ssize_t i, pre_len = PyUnicode_GET_LENGTH(pre), tail_len = PyUnicode_GET_LENGTH(tail);

    for (i = start; i < n; i++) {
        PyObject *prefix = rp_simple_prefix(items[i]);
        PyObject *found, *gen_obj, *line;
        Py_ssize_t gen, prefix_len;
        char digits[24];
        int digits_len;
        char *p;

        if (prefix == NULL)
            break;
        found = PyDict_GetItemWithError(gens, prefix);
        if (found == NULL) {
            if (PyErr_Occurred())
                return -1;
            gen = 0;
        }
        else {
            if (!PyLong_CheckExact(found))
                break;
            gen = PyLong_AsSsize_t(found);
            if (gen == -1 && PyErr_Occurred()) {
                PyErr_Clear();
                break;
            }
            gen += 1;
            if (gen >= max_gen)
                break;  /* the caller closes the segment */
        }
        /* gen \t(pre) prefix \t prefix (tail) */
        digits_len = rp_format_i64(digits, gen);
        prefix_len = PyUnicode_GET_LENGTH(prefix);
        line = PyUnicode_New(digits_len + pre_len + 2 * prefix_len + 1 + tail_len, 127);
        if (line == NULL)
            return -1;
        p = (char *)PyUnicode_DATA(line);
        memcpy(p, digits, digits_len);
        p += digits_len;
        memcpy(p, pre_text, pre_len);
        p += pre_len;
        memcpy(p, PyUnicode_DATA(prefix), prefix_len);
        p += prefix_len;
        *p++ = '\t';
        memcpy(p, PyUnicode_DATA(prefix), prefix_len);
        p += prefix_len;
        memcpy(p, tail_text, tail_len);
        gen_obj = PyLong_FromSsize_t(gen);
        if (gen_obj == NULL || PyDict_SetItem(gens, prefix, gen_obj) < 0
            || PyList_Append(lines, line) < 0) {
            Py_XDECREF(gen_obj);
            Py_DECREF(line);
            return -1;
        }
        Py_DECREF(gen_obj);
        Py_DECREF(line);
        if (gen > *top)
            *top = gen;
    }
    return i;
}

/* route_lines(lines, gens, nlris, start, pre, tail, max_gen) -> (stop, top) */
static PyObject *
route_lines(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *lines, *gens, *nlris, *pre, *tail;
    Py_ssize_t stop, start, max_gen, top = 0;

    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError,
                        "route_lines(lines, gens, nlris, start, pre, tail, max_gen) takes 7 arguments");
        return NULL;
    }
    lines = args[0];
    gens = args[1];
    nlris = args[2];
    pre = args[4];
    tail = args[5];
    start = PyLong_AsSsize_t(args[3]);
    max_gen = PyLong_AsSsize_t(args[6]);
    if (PyErr_Occurred())
        return NULL;
    if (!PyList_CheckExact(lines) || !PyDict_CheckExact(gens)
        || !(PyTuple_CheckExact(nlris) || PyList_CheckExact(nlris))
        || !PyUnicode_CheckExact(pre) || !PyUnicode_IS_ASCII(pre)
        || !PyUnicode_CheckExact(tail) || !PyUnicode_IS_ASCII(tail) || start < 0
        || nlris == lines) {  /* appending would move the items being read */
        /* Nothing for this loop: the caller's own loop takes the routes. */
        return Py_BuildValue("(nn)", start, top);
    }
    stop = rp_emit_routes(lines, gens, PySequence_Fast_ITEMS(nlris),
                          PySequence_Fast_GET_SIZE(nlris), start, pre, tail, max_gen, &top);
    if (stop < 0)
        return NULL;
    return Py_BuildValue("(nn)", stop, top);
}

/* ---- attribute_text ----------------------------------------------------- */

/* Set by configure(): the Attributes class and where its fields are. */
static PyTypeObject *Attributes_T;
static Py_ssize_t F_origin, F_as_path, F_med, F_local_pref, F_communities, F_large,
    F_ext, F_atomic, F_aggregator, F_originator, F_cluster, N_fields;
static const char *const Origin_Names[3] = {"igp", "egp", "incomplete"};

/* A growing text buffer. */
typedef struct {
    char *p;
    Py_ssize_t len, cap;
    char small[1024];
} Buf;

static int
grow(Buf *b, Py_ssize_t need)
{
    Py_ssize_t cap = b->cap * 2 + need;
    char *p = b->p == b->small ? PyMem_Malloc(cap) : PyMem_Realloc(b->p, cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (b->p == b->small)
        memcpy(p, b->small, b->len);
    b->p = p;
    b->cap = cap;
    return 0;
}

static int
put(Buf *b, const char *text, Py_ssize_t n)
{
    if (b->len + n > b->cap && grow(b, n) < 0)
        return -1;
    memcpy(b->p + b->len, text, n);
    b->len += n;
    return 0;
}

#define PUTS(b, s) put((b), (s), (Py_ssize_t)strlen(s))

/* The decimal text of an exact non-negative int (as str() gives it);
   1 when it is not one, -1 on memory error. */
static int
put_number(Buf *b, PyObject *value)
{
    unsigned long long v;
    char digits[24];
    int n;
    if (!PyLong_CheckExact(value))
        return 1;
    v = PyLong_AsUnsignedLongLong(value);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 1;
    }
    n = rp_format_u64(digits, v);
    return put(b, digits, n);
}

/* Put the numbers of a tuple joined by sep; 1 when something is not a
   tuple of exact non-negative ints. */
static int
put_numbers(Buf *b, PyObject *tuple, const char *sep)
{
    Py_ssize_t i;
    int r;
    if (!PyTuple_CheckExact(tuple))
        return 1;
    for (i = 0; i < PyTuple_GET_SIZE(tuple); i++) {
        if (i > 0 && PUTS(b, sep) < 0)
            return -1;
        if ((r = put_number(b, PyTuple_GET_ITEM(tuple, i))) != 0)
            return r;
    }
    return 0;
}

/* {a:b,c:d} of a tuple of number tuples of `width` items, or \N when empty. */
static int
put_community_array(Buf *b, PyObject *items, Py_ssize_t width)
{
    Py_ssize_t i;
    int r;
    if (!PyTuple_CheckExact(items))
        return 1;
    if (PyTuple_GET_SIZE(items) == 0)
        return PUTS(b, "\\N");
    if (PUTS(b, "{") < 0)
        return -1;
    for (i = 0; i < PyTuple_GET_SIZE(items); i++) {
        PyObject *item = PyTuple_GET_ITEM(items, i);
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != width)
            return 1;
        if (i > 0 && PUTS(b, ",") < 0)
            return -1;
        if ((r = put_numbers(b, item, ":")) != 0)
            return r;
    }
    return PUTS(b, "}");
}

/* A number or \N (rows._number); 1 for anything else. */
static int
put_optional_number(Buf *b, PyObject *value)
{
    return value == Py_None ? PUTS(b, "\\N") : put_number(b, value);
}

static int
attribute_fields(Buf *b, PyObject *attrs, PyObject *next_hop)
{
    PyObject *origin = PyTuple_GET_ITEM(attrs, F_origin);
    PyObject *path = PyTuple_GET_ITEM(attrs, F_as_path);
    PyObject *aggregator = PyTuple_GET_ITEM(attrs, F_aggregator);
    PyObject *last_asns = NULL;
    Py_ssize_t i, j, written = 0;
    int r, atomic;

    /* Left to Python: what needs its address checks or ext-community names. */
    if (PyTuple_GET_ITEM(attrs, F_originator) != Py_None
        || !PyTuple_CheckExact(PyTuple_GET_ITEM(attrs, F_cluster))
        || PyTuple_GET_SIZE(PyTuple_GET_ITEM(attrs, F_cluster)) != 0
        || !PyTuple_CheckExact(PyTuple_GET_ITEM(attrs, F_ext))
        || PyTuple_GET_SIZE(PyTuple_GET_ITEM(attrs, F_ext)) != 0)
        return 1;
    /* next hop (already checked by the caller) \t origin */
    if (put(b, PyUnicode_DATA(next_hop), PyUnicode_GET_LENGTH(next_hop)) < 0
        || PUTS(b, "\t") < 0)
        return -1;
    if (origin == Py_None)
        r = PUTS(b, "\\N");
    else {
        long v;
        if (!PyLong_Check(origin))
            return 1;
        v = PyLong_AsLong(origin);
        if (v < 0 || v > 2) {
            PyErr_Clear();
            return 1;
        }
        r = PUTS(b, Origin_Names[v]);
    }
    /* \t {every ASN of the path, in order} */
    if (r < 0 || PUTS(b, "\t{") < 0)
        return -1;
    if (!PyTuple_CheckExact(path))
        return 1;
    for (i = 0; i < PyTuple_GET_SIZE(path); i++) {
        PyObject *segment = PyTuple_GET_ITEM(path, i);
        if (!PyTuple_CheckExact(segment) || PyTuple_GET_SIZE(segment) != 2)
            return 1;
        last_asns = PyTuple_GET_ITEM(segment, 1);
        if (!PyTuple_CheckExact(last_asns))
            return 1;
        for (j = 0; j < PyTuple_GET_SIZE(last_asns); j++) {
            if (written++ > 0 && PUTS(b, ",") < 0)
                return -1;
            if ((r = put_number(b, PyTuple_GET_ITEM(last_asns, j))) != 0)
                return r;
        }
    }
    /* \t origin AS: the last ASN when the path ends in an AS_SEQUENCE */
    if (PUTS(b, "}\t") < 0)
        return -1;
    if (last_asns == NULL)
        r = PUTS(b, "\\N");
    else {
        PyObject *type = PyTuple_GET_ITEM(PyTuple_GET_ITEM(path, i - 1), 0);
        long v;
        if (!PyLong_Check(type))
            return 1;
        v = PyLong_AsLong(type);
        if (v == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 1;
        }
        if (v != 2)
            r = PUTS(b, "\\N");
        else if (PyTuple_GET_SIZE(last_asns) == 0)
            return 1;
        else
            r = put_number(b, PyTuple_GET_ITEM(last_asns, PyTuple_GET_SIZE(last_asns) - 1));
    }
    if (r != 0)
        return r;
    /* \t MED \t LOCAL_PREF \t communities \t large \t ext (none) \t atomic */
    if (PUTS(b, "\t") < 0)
        return -1;
    if ((r = put_optional_number(b, PyTuple_GET_ITEM(attrs, F_med))) != 0)
        return r;
    if (PUTS(b, "\t") < 0)
        return -1;
    if ((r = put_optional_number(b, PyTuple_GET_ITEM(attrs, F_local_pref))) != 0)
        return r;
    if (PUTS(b, "\t") < 0)
        return -1;
    if ((r = put_community_array(b, PyTuple_GET_ITEM(attrs, F_communities), 2)) != 0)
        return r;
    if (PUTS(b, "\t") < 0)
        return -1;
    if ((r = put_community_array(b, PyTuple_GET_ITEM(attrs, F_large), 3)) != 0)
        return r;
    atomic = PyObject_IsTrue(PyTuple_GET_ITEM(attrs, F_atomic));
    if (atomic < 0)
        return -1;
    if (PUTS(b, atomic ? "\t\\N\tt\t" : "\t\\N\tf\t") < 0)
        return -1;
    /* aggregator "asn:address", when its text needs no escaping */
    if (aggregator == Py_None)
        r = PUTS(b, "\\N");
    else {
        PyObject *address;
        const char *text;
        Py_ssize_t n;
        if (!PyTuple_CheckExact(aggregator) || PyTuple_GET_SIZE(aggregator) != 2)
            return 1;
        address = PyTuple_GET_ITEM(aggregator, 1);
        if (!PyUnicode_CheckExact(address) || !PyUnicode_IS_ASCII(address))
            return 1;
        text = (const char *)PyUnicode_DATA(address);
        n = PyUnicode_GET_LENGTH(address);
        for (i = 0; i < n; i++)
            if (text[i] == '\\' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r'
                || text[i] == 0)
                return 1;
        if ((r = put_number(b, PyTuple_GET_ITEM(aggregator, 0))) != 0)
            return r;
        if (PUTS(b, ":") < 0 || put(b, text, n) < 0)
            return -1;
    }
    /* \t originator (none) \t cluster list (none) */
    return r != 0 ? r : PUTS(b, "\t\\N\t\\N");
}

/* attribute_text(attrs, next_hop) -> str or None */
static PyObject *
attribute_text(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Buf b;
    PyObject *result = NULL;
    int r;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "attribute_text(attrs, next_hop) takes 2 arguments");
        return NULL;
    }
    if (Attributes_T == NULL || Py_TYPE(args[0]) != Attributes_T
        || PyTuple_GET_SIZE(args[0]) != N_fields || !PyUnicode_CheckExact(args[1])
        || !PyUnicode_IS_ASCII(args[1]))
        Py_RETURN_NONE;
    b.p = b.small;
    b.len = 0;
    b.cap = sizeof b.small;
    r = attribute_fields(&b, args[0], args[1]);
    if (r == 0)
        result = PyUnicode_DecodeASCII(b.p, b.len, NULL);
    else if (r > 0)
        result = Py_NewRef(Py_None);
    if (b.p != b.small)
        PyMem_Free(b.p);
    return result;
}

Py_ssize_t
rp_field_index(PyObject *cls, const char *name, const char *who)
{
    PyObject *fields = PyObject_GetAttrString(cls, "_fields");
    Py_ssize_t found = -1;
    if (fields == NULL)
        return -1;
    if (PyTuple_Check(fields))
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(fields) && found < 0; i++) {
            PyObject *item = PyTuple_GET_ITEM(fields, i);
            if (PyUnicode_Check(item) && PyUnicode_CompareWithASCIIString(item, name) == 0)
                found = i;
        }
    Py_DECREF(fields);
    if (found < 0)
        PyErr_Format(PyExc_ValueError, "%s: %R has no field %s", who, cls, name);
    return found;
}

/* configure(Attributes): the class attribute_text accepts, its fields by name. */
static PyObject *
configure(PyObject *module, PyObject *cls)
{
    static const char *const names[] = {
        "origin", "as_path", "med", "local_pref", "communities", "large_communities",
        "ext_communities", "atomic_aggregate", "aggregator", "originator_id", "cluster_list"};
    Py_ssize_t *slots[] = {&F_origin, &F_as_path, &F_med, &F_local_pref, &F_communities,
                           &F_large, &F_ext, &F_atomic, &F_aggregator, &F_originator,
                           &F_cluster};
    Py_ssize_t found[sizeof names / sizeof names[0]];
    PyObject *fields;
    Py_ssize_t i;

    if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "configure: expected a NamedTuple class");
        return NULL;
    }
    for (i = 0; i < (Py_ssize_t)(sizeof names / sizeof names[0]); i++)
        if ((found[i] = rp_field_index(cls, names[i], "configure")) < 0)
            return NULL;  /* the class configured before stays */
    if ((fields = PyObject_GetAttrString(cls, "_fields")) == NULL)
        return NULL;
    for (i = 0; i < (Py_ssize_t)(sizeof names / sizeof names[0]); i++)
        *slots[i] = found[i];
    N_fields = PyTuple_GET_SIZE(fields);  /* a tuple: rp_field_index found names in it */
    Py_DECREF(fields);
    Py_XSETREF(Attributes_T, (PyTypeObject *)Py_NewRef(cls));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"route_lines", (PyCFunction)(void (*)(void))route_lines, METH_FASTCALL,
     "route_lines(lines, gens, nlris, start, pre, tail, max_gen) -> (stop, top): append the"
     " stage lines of nlris[start:stop], simple unicast routes, and set their generations in"
     " gens; top is the highest generation given.  nlris[stop] (if any) is for the caller."},
    {"attribute_text", (PyCFunction)(void (*)(void))attribute_text, METH_FASTCALL,
     "attribute_text(attrs, next_hop) -> str or None: rows.attribute_text, next_hop being"
     " the next hop's text already checked (or \\N); None: use the Python code."},
    {"route_events", (PyCFunction)(void (*)(void))rp_route_events, METH_FASTCALL,
     "route_events(builder, router_ip, events, start, received_at) -> stop: add"
     " events[start:stop], Route Monitoring events of the usual shape, to the BatchBuilder as"
     " its add_events loop does.  events[stop] (if any) is for the caller."},
    {"configure_events", (PyCFunction)(void (*)(void))rp_configure_events, METH_FASTCALL,
     "configure_events(RouteMonitoring, PeerHeader, Update, RouteSet, Attributes, namespace,"
     " attribute_digest, sane_past, sane_future): namespace is rows' globals (once, at"
     " import)."},
    {"wire_digest", (PyCFunction)(void (*)(void))rp_wire_digest_function, METH_FASTCALL,
     "wire_digest(next_hop, wire) -> int or None: rows.attribute_digest of a set decoded"
     " from the wire; None: use the Python code."},
    {"configure", configure, METH_O,
     "configure(Attributes): the class attribute_text accepts (once, at import)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pybmpmon._rowpath",
    .m_doc = "C accelerator for the batch builder's route lines; pybmpmon.store.rows is the"
             " reference.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__rowpath(void)
{
    PyObject *module = PyModule_Create(&module_def);
    if (module != NULL && (rp_events_init() < 0
                           || PyModule_AddIntConstant(module, "API_VERSION", API_VERSION) < 0))
        Py_CLEAR(module);
    return module;
}
