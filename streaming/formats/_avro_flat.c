/* One flat Avro record's values, read in C: what streaming.formats.avro_compiled's generated
 * Python reads, field for field, at a fraction of the interpreter's cost.
 *
 * read(value, start, program) -> tuple of the record's values, in field order.
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
 * No state but the module's Defer class; the GIL is held throughout (each call is a few
 * hundred nanoseconds).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

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

static PyObject *flat_read(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    Cursor c;
    PyObject *program, *out;
    Py_ssize_t i, fields;
    if (nargs != 3 || !PyBytes_Check(args[0]) || !PyTuple_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "read(value: bytes, start: int, program: tuple)");
        return NULL;
    }
    c.buf = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    c.len = PyBytes_GET_SIZE(args[0]);
    c.p = PyLong_AsSsize_t(args[1]);
    if (c.p == -1 && PyErr_Occurred()) return NULL;
    if (c.p < 0 || c.p > c.len) return defer();
    program = args[2];
    fields = PyTuple_GET_SIZE(program);
    out = PyTuple_New(fields);
    if (out == NULL) return NULL;
    for (i = 0; i < fields; i++) {
        PyObject *v = read_op(&c, PyTuple_GET_ITEM(program, i));
        if (v == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, i, v);
    }
    if (c.p != c.len) {
        Py_DECREF(out);
        return defer();
    }
    return out;
}

static PyMethodDef methods[] = {
    {"read", (PyCFunction)(void (*)(void))flat_read, METH_FASTCALL,
     "read(value, start, program) -> the flat record's values, or raise Defer."},
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
