/* One flat Avro record's values, read in C: what streaming.formats.avro_compiled's generated
 * Python reads, field for field, at a fraction of the interpreter's cost.
 *
 * read(value, start, program) -> tuple of the record's values, in field order.
 * (read_model takes the value last, so that functools.partial binds the rest once.)
 *
 * ``program`` is a tuple with one op per field, each a tuple (code,) or (code, arg):
 *   NULL, BOOLEAN, LONG (int and long), FLOAT, DOUBLE, STRING (strict UTF-8), BYTES;
 *   ENUM (arg: the tuple of its symbols, returned as they are);
 *   LITERAL (arg: a tuple of (bytes, str) pairs: an Avro string that must equal one of the
 *            bytes; its str is returned, so no new object is made);
 *   UNION (arg: the tuple of its branches' ops).
 *
 * Anything unusual raises Defer: the value ends early, bytes are left over, a negative length,
 * a varint longer than 64 bits, a union or enum index out of range, invalid UTF-8, a string
 * that is none of a literal's. The caller then reads the value the slow way (fastavro, then
 * pydantic), which gives the record or the dead letter it always gave. So this module decides
 * how fast a valid event is read, never what any event becomes; the tests hold it to the
 * Python reader's answer on random and corrupted values.
 *
 * read_model(program, checks, plan, start, value) -> the pipeline's pydantic model, built as
 * pydantic-core builds it, when every value passes its check (else Defer):
 *   checks: one per field of the program, None or (by_length, lo, lo_strict, hi, hi_strict,
 *           finite, allowed): by_length compares len(value) (a str's length), else the value;
 *           lo and hi are None or numbers compared with Python's comparison; finite refuses
 *           inf and nan; allowed is None or a frozenset the value must be in. These are
 *           streaming.formats.model_checks' tests, the same ones its generated Python runs.
 *   plan: (cls, names, order, fields_set, new, set_dict, set_fields, set_extra, set_private):
 *         the model's field names in its order, each one's place in the program's values,
 *         the frozenset of the names, object.__new__ and the four slot descriptors that
 *         pydantic-core sets (streaming.formats.model_checks.builder_scope).
 *
 * read_batch(messages, limit, readers) -> (indexes, records, rest): a poll batch's framed
 * values through their readers in one call, the loop streaming.formats.framed runs in Python
 * otherwise (its per-message bookkeeping cost about as much as the read itself):
 *   readers: dict schema id (int) -> a callable taking the framed value (a model reader);
 *   a message whose value() is not bytes of 5 to limit bytes framed with magic byte 0, whose
 *   id is not in readers, or whose reader raises (Defer, or any other Exception), is left in
 *   rest, in order, for the caller's loop to say what it is. indexes and rest are ascending.
 *
 * No state but the module's Defer class; the GIL is held throughout (each call is a few
 * hundred nanoseconds a value).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>

#include "_flat_batch.h"

enum { OP_NULL, OP_BOOLEAN, OP_LONG, OP_FLOAT, OP_DOUBLE, OP_STRING, OP_BYTES, OP_ENUM,
       OP_LITERAL, OP_UNION };

static PyObject *Defer;

typedef struct {
    const unsigned char *buf;
    Py_ssize_t len;
    Py_ssize_t p;
} Cursor;

/* A zig-zag varint; -1 (no exception set) when it runs past the end or past 64 bits. */
static int read_long(Cursor *c, int64_t *out) {
    uint64_t n, part;
    unsigned char b;
    int s = 7;
    if (c->p >= c->len) return -1;
    b = c->buf[c->p++];
    n = b & 0x7F;
    while (b & 0x80) {
        if (c->p >= c->len || s > 63) return -1;
        b = c->buf[c->p++];
        part = b & 0x7F;
        if (s == 63 && part > 1) return -1; /* bits past the 64th */
        n |= part << s;
        s += 7;
    }
    *out = (int64_t)((n >> 1) ^ (~(n & 1) + 1));
    return 0;
}

/* A length and the bytes after it: *start and *size; -1 when negative or past the end. */
static int read_span(Cursor *c, const unsigned char **start, Py_ssize_t *size) {
    int64_t n;
    if (read_long(c, &n) < 0 || n < 0 || n > c->len - c->p) return -1;
    *start = c->buf + c->p;
    *size = (Py_ssize_t)n;
    c->p += (Py_ssize_t)n;
    return 0;
}

static PyObject *defer(void) {
    PyErr_SetNone(Defer);
    return NULL;
}

static PyObject *read_op(Cursor *c, PyObject *op);

static PyObject *read_coded(Cursor *c, long code, PyObject *arg) {
    int64_t n;
    const unsigned char *start;
    Py_ssize_t size;
    switch (code) {
    case OP_NULL:
        Py_RETURN_NONE;
    case OP_BOOLEAN:
        if (c->p >= c->len) return defer();
        if (c->buf[c->p++]) Py_RETURN_TRUE; /* fastavro: any byte but 0 is true */
        Py_RETURN_FALSE;
    case OP_LONG:
        if (read_long(c, &n) < 0) return defer();
        return PyLong_FromLongLong(n);
    case OP_FLOAT: {
        double v;
        if (c->len - c->p < 4) return defer();
        v = PyFloat_Unpack4((const char *)c->buf + c->p, 1); /* struct's "<f" */
        c->p += 4;
        if (v == -1.0 && PyErr_Occurred()) return NULL;
        return PyFloat_FromDouble(v);
    }
    case OP_DOUBLE: {
        double v;
        if (c->len - c->p < 8) return defer();
        v = PyFloat_Unpack8((const char *)c->buf + c->p, 1); /* struct's "<d" */
        c->p += 8;
        if (v == -1.0 && PyErr_Occurred()) return NULL;
        return PyFloat_FromDouble(v);
    }
    case OP_STRING: {
        PyObject *s;
        if (read_span(c, &start, &size) < 0) return defer();
        s = PyUnicode_DecodeUTF8((const char *)start, size, "strict");
        if (s == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            PyErr_Clear();
            return defer();
        }
        return s;
    }
    case OP_BYTES:
        if (read_span(c, &start, &size) < 0) return defer();
        return PyBytes_FromStringAndSize((const char *)start, size);
    case OP_ENUM:
        if (read_long(c, &n) < 0 || n < 0 || n >= PyTuple_GET_SIZE(arg)) return defer();
        return Py_NewRef(PyTuple_GET_ITEM(arg, (Py_ssize_t)n));
    case OP_LITERAL: {
        Py_ssize_t i, count = PyTuple_GET_SIZE(arg);
        if (read_span(c, &start, &size) < 0) return defer();
        for (i = 0; i < count; i++) {
            PyObject *pair = PyTuple_GET_ITEM(arg, i);
            PyObject *raw = PyTuple_GET_ITEM(pair, 0);
            if (PyBytes_GET_SIZE(raw) == size &&
                memcmp(PyBytes_AS_STRING(raw), start, (size_t)size) == 0)
                return Py_NewRef(PyTuple_GET_ITEM(pair, 1));
        }
        return defer();
    }
    case OP_UNION:
        if (read_long(c, &n) < 0 || n < 0 || n >= PyTuple_GET_SIZE(arg)) return defer();
        return read_op(c, PyTuple_GET_ITEM(arg, (Py_ssize_t)n));
    }
    PyErr_Format(PyExc_ValueError, "unknown op code %ld", code);
    return NULL;
}

static PyObject *read_op(Cursor *c, PyObject *op) {
    long code;
    if (!PyTuple_Check(op) || PyTuple_GET_SIZE(op) < 1) {
        PyErr_SetString(PyExc_TypeError, "an op is a tuple (code,) or (code, arg)");
        return NULL;
    }
    code = PyLong_AsLong(PyTuple_GET_ITEM(op, 0));
    if (code == -1 && PyErr_Occurred()) return NULL;
    if (code >= OP_ENUM && (PyTuple_GET_SIZE(op) < 2 || !PyTuple_Check(PyTuple_GET_ITEM(op, 1)))) {
        PyErr_SetString(PyExc_TypeError, "enum, literal and union ops take a tuple argument");
        return NULL;
    }
    return read_coded(c, code, code >= OP_ENUM ? PyTuple_GET_ITEM(op, 1) : NULL);
}

/* Every field of ``program`` from value[start:] into out[0..fields) (new references); -1 with
 * an exception set (Defer or another) and nothing left in out. */
static int read_fields(PyObject *value, PyObject *start, PyObject *program, PyObject **out) {
    Cursor c;
    Py_ssize_t i, j, fields = PyTuple_GET_SIZE(program);
    c.buf = (const unsigned char *)PyBytes_AS_STRING(value);
    c.len = PyBytes_GET_SIZE(value);
    c.p = PyLong_AsSsize_t(start);
    if (c.p == -1 && PyErr_Occurred()) return -1;
    if (c.p < 0 || c.p > c.len) {
        defer();
        return -1;
    }
    for (i = 0; i < fields; i++) {
        out[i] = read_op(&c, PyTuple_GET_ITEM(program, i));
        if (out[i] == NULL) break;
    }
    if (i == fields && c.p == c.len) return 0;
    if (i == fields) defer(); /* bytes left over */
    for (j = 0; j < i; j++) Py_DECREF(out[j]);
    return -1;
}

static PyObject *flat_read(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    PyObject *out;
    Py_ssize_t i;
    if (nargs != 3 || !PyBytes_Check(args[0]) || !PyTuple_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "read(value: bytes, start: int, program: tuple)");
        return NULL;
    }
    out = PyTuple_New(PyTuple_GET_SIZE(args[2]));
    if (out == NULL) return NULL;
    if (read_fields(args[0], args[1], args[2], &PyTuple_GET_ITEM(out, 0)) < 0) {
        for (i = 0; i < PyTuple_GET_SIZE(out); i++) PyTuple_SET_ITEM(out, i, NULL);
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

/* a <= b (or a < b when strict), as Python compares them: floats and ints that fit 64 bits
 * compared in C, anything else by Python's comparison. 1, 0, or -1 on an error. */
static int below(PyObject *a, PyObject *b, int strict) {
    if (PyFloat_CheckExact(a) && PyFloat_CheckExact(b)) {
        double x = PyFloat_AS_DOUBLE(a), y = PyFloat_AS_DOUBLE(b);
        return strict ? x < y : x <= y; /* nan: false, as in Python */
    }
    if (PyLong_CheckExact(a) && PyLong_CheckExact(b)) {
        int over_a, over_b;
        long long x = PyLong_AsLongLongAndOverflow(a, &over_a);
        long long y = PyLong_AsLongLongAndOverflow(b, &over_b);
        if (!over_a && !over_b) return strict ? x < y : x <= y;
    }
    return PyObject_RichCompareBool(a, b, strict ? Py_LT : Py_LE);
}

/* 1 when the value passes its check, 0 when not, -1 on an error. */
static int passes(PyObject *value, PyObject *check) {
    PyObject *measured = value, *lo, *hi, *allowed;
    int ok = 1, cmp;
    if (check == Py_None) return 1;
    if (!PyTuple_Check(check) || PyTuple_GET_SIZE(check) != 7) {
        PyErr_SetString(PyExc_TypeError, "a check is None or a 7-tuple");
        return -1;
    }
    if (PyTuple_GET_ITEM(check, 0) == Py_True) { /* by length */
        Py_ssize_t n = PyObject_Length(value);
        if (n < 0) return -1;
        measured = PyLong_FromSsize_t(n);
        if (measured == NULL) return -1;
    } else {
        Py_INCREF(measured);
    }
    lo = PyTuple_GET_ITEM(check, 1);
    hi = PyTuple_GET_ITEM(check, 3);
    if (lo != Py_None) {
        cmp = below(lo, measured, PyTuple_GET_ITEM(check, 2) == Py_True);
        if (cmp <= 0) ok = cmp;
    }
    if (ok == 1 && hi != Py_None) {
        cmp = below(measured, hi, PyTuple_GET_ITEM(check, 4) == Py_True);
        if (cmp <= 0) ok = cmp;
    }
    Py_DECREF(measured);
    if (ok == 1 && PyTuple_GET_ITEM(check, 5) == Py_True) {
        double d = PyFloat_AsDouble(value); /* only floats and ints reach a finite check */
        if (d == -1.0 && PyErr_Occurred()) return -1;
        if (!isfinite(d)) ok = 0;
    }
    allowed = PyTuple_GET_ITEM(check, 6);
    if (ok == 1 && allowed != Py_None) ok = PySet_Contains(allowed, value);
    return ok;
}

#define MAX_FIELDS 256

static PyObject *flat_read_model(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    PyObject *values[MAX_FIELDS];
    PyObject *checks, *plan, *names, *order, *model = NULL, *dict = NULL;
    Py_ssize_t i, count;
    if (nargs != 5 || !PyTuple_Check(args[0]) || !PyTuple_Check(args[1]) ||
        !PyTuple_Check(args[2]) || PyTuple_GET_SIZE(args[2]) != 9 || !PyBytes_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError,
                        "read_model(program, checks: tuple, plan: 9-tuple, start, value: bytes)");
        return NULL;
    }
    count = PyTuple_GET_SIZE(args[0]);
    checks = args[1];
    plan = args[2];
    names = PyTuple_GET_ITEM(plan, 1);
    order = PyTuple_GET_ITEM(plan, 2);
    if (count > MAX_FIELDS || PyTuple_GET_SIZE(checks) != count || !PyTuple_Check(names) ||
        !PyTuple_Check(order) || PyTuple_GET_SIZE(names) != PyTuple_GET_SIZE(order)) {
        PyErr_SetString(PyExc_TypeError,
                        "at most 256 fields, one check per field, names and order of one length");
        return NULL;
    }
    if (read_fields(args[4], args[3], args[0], values) < 0) return NULL;
    for (i = 0; i < count; i++) {
        int ok = passes(values[i], PyTuple_GET_ITEM(checks, i));
        if (ok < 0) goto done;
        if (!ok) {
            defer();
            goto done;
        }
    }
    dict = PyDict_New();
    if (dict == NULL) goto done;
    for (i = 0; i < PyTuple_GET_SIZE(names); i++) {
        Py_ssize_t at = PyLong_AsSsize_t(PyTuple_GET_ITEM(order, i));
        if (at == -1 && PyErr_Occurred()) goto done;
        if (at < 0 || at >= count) {
            PyErr_SetString(PyExc_IndexError, "a field's place is out of range");
            goto done;
        }
        if (PyDict_SetItem(dict, PyTuple_GET_ITEM(names, i), values[at]) < 0) goto done;
    }
    model = new_model(plan, dict);
done:
    Py_XDECREF(dict);
    for (i = 0; i < count; i++) Py_DECREF(values[i]);
    return model;
}

typedef struct {
    Py_ssize_t limit;
    PyObject *readers; /* schema id -> model reader */
    PyObject *reader;  /* readers[last_id] (a new reference), or NULL where it has none */
    long long last_id;
} Framed;

static int read_framed(void *ctx, PyObject *value, PyObject **record) {
    Framed *f = (Framed *)ctx;
    const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(value);
    Py_ssize_t size = PyBytes_GET_SIZE(value);
    if (size < 5 || size > f->limit || b[0] != 0) return 0;
    long long id = ((long long)b[1] << 24) | (b[2] << 16) | (b[3] << 8) | b[4];
    if (id != f->last_id) {
        PyObject *key = PyLong_FromLongLong(id);
        if (key == NULL) return -1;
        Py_CLEAR(f->reader);
        f->reader = PyDict_GetItemWithError(f->readers, key);
        Py_DECREF(key);
        if (f->reader == NULL && PyErr_Occurred()) return -1;
        Py_XINCREF(f->reader);
        f->last_id = id;
    }
    return f->reader == NULL ? 0 : call_reader(f->reader, value, record);
}

static PyObject *flat_read_batch(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyDict_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "read_batch(messages, limit: int, readers: dict)");
        return NULL;
    }
    Framed framed = {PyLong_AsSsize_t(args[1]), args[2], NULL, -1};
    if (framed.limit == -1 && PyErr_Occurred()) return NULL;
    PyObject *result = read_values(args[0], read_framed, &framed);
    Py_XDECREF(framed.reader);
    return result;
}

static PyMethodDef methods[] = {
    {"read", (PyCFunction)(void (*)(void))flat_read, METH_FASTCALL,
     "read(value, start, program) -> the flat record's values, or raise Defer."},
    {"read_model", (PyCFunction)(void (*)(void))flat_read_model, METH_FASTCALL,
     "read_model(program, checks, plan, start, value) -> the checked model, or raise Defer."},
    {"read_batch", (PyCFunction)(void (*)(void))flat_read_batch, METH_FASTCALL,
     "read_batch(messages, limit, readers) -> (indexes, records, rest): each framed value "
     "through the reader of its schema id; the values left in rest are the caller's."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_avro_flat",
    "Flat Avro records read in C (see streaming.formats.avro_compiled).", -1, methods,
};

PyMODINIT_FUNC PyInit__avro_flat(void) {
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) return NULL;
    Defer = PyErr_NewExceptionWithDoc(
        "streaming.formats._avro_flat.Defer",
        "The C reader does not answer for this value: read it the slow way.", NULL, NULL);
    if (Defer == NULL || PyModule_AddObjectRef(m, "Defer", Defer) < 0) {
        Py_DECREF(m);
        return NULL;
    }
#define CODE(name) if (PyModule_AddIntConstant(m, #name, OP_##name) < 0) { Py_DECREF(m); return NULL; }
    CODE(NULL) CODE(BOOLEAN) CODE(LONG) CODE(FLOAT) CODE(DOUBLE) CODE(STRING) CODE(BYTES)
    CODE(ENUM) CODE(LITERAL) CODE(UNION)
#undef CODE
    return m;
}
