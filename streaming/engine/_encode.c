/*
 * JSON predictions, byte for byte what streaming.engine.outputs.encode_predictions' Python
 * writes (its f-strings are the reference the tests hold this to), a batch per call.
 *
 * The inference thread encodes every row it publishes while holding the GIL, which the
 * decoding thread waits for: in Python a row cost 1.0-1.5 us (2 or more with a graph's node
 * scores), most of it the f-string's float formatting and the bytes made from a str.
 *
 * predictions(event_ids, ts_ms, scores, codes, threshold, reasons, node_keys, node_scores,
 *             tail, quote) -> list[bytes] | None
 *   event_ids: list; ts_ms: list; scores: float64 buffer (n); codes: int8 buffer (n), each
 *   0, 1 or 2 (approve, review, decline); reasons: None or a list (n) of None ("reasons":[])
 *   or str (the field's JSON); node_keys: None or a tuple of str ('"name":'), node_scores:
 *   float64 buffer (keys, n), NaN where a node did not score the row (its key left out);
 *   tail: str after the reasons and scores; quote: json's encode_basestring, called for an
 *   event id that is not plain ASCII without characters to escape.
 *   Floats are formatted by PyOS_double_to_string(v, 'g', 6), which is what format(v,
 *   '.6g') calls. None (nothing encoded) where a code is outside 0..2: the caller's Python
 *   then answers as it always did.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

#include "_buffers.h"

typedef struct {
    char *data;
    Py_ssize_t len, cap;
} Buf;

static int grow(Buf *b, Py_ssize_t more) {
    if (b->len + more <= b->cap) return 0;
    Py_ssize_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more) cap *= 2;
    char *data = PyMem_Realloc(b->data, (size_t)cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static int put(Buf *b, const char *s, Py_ssize_t n) {
    if (grow(b, n) < 0) return -1;
    memcpy(b->data + b->len, s, (size_t)n);
    b->len += n;
    return 0;
}

#define PUT_LIT(b, lit) put((b), (lit), (Py_ssize_t)(sizeof(lit) - 1))

static int put_str(Buf *b, PyObject *text) {
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(text, &n);
    return s == NULL ? -1 : put(b, s, n);
}

static int put_float(Buf *b, double v) {
    char *s = PyOS_double_to_string(v, 'g', 6, 0, NULL);
    if (s == NULL) return -1;
    int rc = put(b, s, (Py_ssize_t)strlen(s));
    PyMem_Free(s);
    return rc;
}

/* A str that json writes as it is (between quotes): ASCII, no '"', '\\' or control char. */
static int plain(PyObject *s) {
    if (!PyUnicode_CheckExact(s) || !PyUnicode_IS_ASCII(s)) return 0;
    const unsigned char *p = PyUnicode_1BYTE_DATA(s);
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    for (Py_ssize_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] == '"' || p[i] == '\\') return 0;
    return 1;
}

static int put_quoted(Buf *b, PyObject *s, PyObject *quote) {
    if (plain(s)) {
        if (grow(b, PyUnicode_GET_LENGTH(s) + 2) < 0) return -1;
        b->data[b->len++] = '"';
        memcpy(b->data + b->len, PyUnicode_1BYTE_DATA(s), (size_t)PyUnicode_GET_LENGTH(s));
        b->len += PyUnicode_GET_LENGTH(s);
        b->data[b->len++] = '"';
        return 0;
    }
    PyObject *q = PyObject_CallOneArg(quote, s);
    if (q == NULL) return -1;
    int rc = PyUnicode_Check(q) ? put_str(b, q) : -1;
    if (rc < 0 && !PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "quote() returned no str");
    Py_DECREF(q);
    return rc;
}

static int put_int(Buf *b, PyObject *v) {
    if (PyLong_CheckExact(v)) {
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (!overflow && !(x == -1 && PyErr_Occurred())) {
            char tmp[32];
            int n = snprintf(tmp, sizeof tmp, "%lld", x);
            return put(b, tmp, n);
        }
        PyErr_Clear();
    }
    PyObject *empty = PyUnicode_New(0, 0);
    if (empty == NULL) return -1;
    PyObject *s = PyObject_Format(v, empty); /* what an f-string's {ts} does */
    Py_DECREF(empty);
    if (s == NULL) return -1;
    int rc = put_str(b, s);
    Py_DECREF(s);
    return rc;
}

static const char *const WORDS[3] = {"\"approve\"", "\"review\"", "\"decline\""};

static PyObject *predictions(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError,
                        "predictions(event_ids, ts_ms, scores, codes, threshold, reasons, "
                        "node_keys, node_scores, tail, quote)");
        return NULL;
    }
    PyObject *ids = args[0], *ts = args[1], *reasons = args[5], *keys = args[6];
    PyObject *tail = args[8], *quote = args[9];
    double threshold = PyFloat_AsDouble(args[4]);
    if (threshold == -1.0 && PyErr_Occurred()) return NULL;
    if (!PyList_Check(ids) || !PyList_Check(ts) || !PyUnicode_Check(tail) ||
        (reasons != Py_None && !PyList_Check(reasons)) ||
        (keys != Py_None && !PyTuple_Check(keys))) {
        PyErr_SetString(PyExc_TypeError, "predictions: event_ids and ts_ms lists, tail a str, "
                                         "reasons None or a list, node_keys None or a tuple");
        return NULL;
    }
    Py_buffer sv, cv, nv;
    int have_nodes = keys != Py_None;
    if (take_buffer(args[2], &sv, 'd', 0, "scores") < 0) return NULL;
    if (take_buffer(args[3], &cv, 'b', 0, "codes") < 0) {
        PyBuffer_Release(&sv);
        return NULL;
    }
    if (have_nodes && take_buffer(args[7], &nv, 'd', 0, "node_scores") < 0) {
        PyBuffer_Release(&sv);
        PyBuffer_Release(&cv);
        return NULL;
    }
    PyObject *out = NULL;
    Buf b = {NULL, 0, 0};
    Py_ssize_t n = PyList_GET_SIZE(ids);
    Py_ssize_t k = have_nodes ? PyTuple_GET_SIZE(keys) : 0;
    const double *scores = sv.buf, *nodes = have_nodes ? nv.buf : NULL;
    const signed char *codes = cv.buf;
    if (PyList_GET_SIZE(ts) != n || sv.len != n * 8 || cv.len != n ||
        (reasons != Py_None && PyList_GET_SIZE(reasons) != n) ||
        (have_nodes && nv.len != k * n * 8)) {
        PyErr_SetString(PyExc_ValueError, "predictions: the rows' lengths differ");
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (codes[i] < 0 || codes[i] > 2) { /* the Python's words[code] answers these */
            out = Py_NewRef(Py_None);
            goto done;
        }
    for (Py_ssize_t j = 0; j < k; j++)
        if (!PyUnicode_Check(PyTuple_GET_ITEM(keys, j))) {
            PyErr_SetString(PyExc_TypeError, "predictions: node_keys must be str");
            goto done;
        }
    out = PyList_New(n);
    if (out == NULL) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        b.len = 0;
        double score = scores[i];
        if (PUT_LIT(&b, "{\"event_id\":") < 0 ||
            put_quoted(&b, PyList_GET_ITEM(ids, i), quote) < 0 ||
            PUT_LIT(&b, ",\"score\":") < 0 || put_float(&b, score) < 0)
            goto fail;
        if ((score >= threshold ? PUT_LIT(&b, ",\"flagged\":true,\"ts_ms\":")
                                : PUT_LIT(&b, ",\"flagged\":false,\"ts_ms\":")) < 0 ||
            put_int(&b, PyList_GET_ITEM(ts, i)) < 0 || PUT_LIT(&b, ",\"decision\":") < 0 ||
            put(&b, WORDS[codes[i]], (Py_ssize_t)strlen(WORDS[codes[i]])) < 0 ||
            PUT_LIT(&b, ",\"reasons\":") < 0)
            goto fail;
        PyObject *why = reasons == Py_None ? Py_None : PyList_GET_ITEM(reasons, i);
        if (why == Py_None) {
            if (PUT_LIT(&b, "[]") < 0) goto fail;
        } else if (!PyUnicode_Check(why)) {
            PyErr_SetString(PyExc_TypeError, "predictions: a row's reasons must be str or None");
            goto fail;
        } else if (put_str(&b, why) < 0) {
            goto fail;
        }
        if (have_nodes) {
            if (PUT_LIT(&b, ",\"scores\":{") < 0) goto fail;
            int first = 1;
            for (Py_ssize_t j = 0; j < k; j++) {
                double v = nodes[j * n + i];
                if (isnan(v)) continue;
                if ((!first && PUT_LIT(&b, ",") < 0) ||
                    put_str(&b, PyTuple_GET_ITEM(keys, j)) < 0 || put_float(&b, v) < 0)
                    goto fail;
                first = 0;
            }
            if (PUT_LIT(&b, "}") < 0) goto fail;
        }
        if (put_str(&b, tail) < 0) goto fail;
        PyObject *row = PyBytes_FromStringAndSize(b.data, b.len);
        if (row == NULL) goto fail;
        PyList_SET_ITEM(out, i, row);
    }
    goto done;
fail:
    Py_CLEAR(out);
done:
    PyMem_Free(b.data);
    PyBuffer_Release(&sv);
    PyBuffer_Release(&cv);
    if (have_nodes) PyBuffer_Release(&nv);
    return out;
}

static PyMethodDef methods[] = {
    {"predictions", (PyCFunction)(void (*)(void))predictions, METH_FASTCALL,
     "predictions(event_ids, ts_ms, scores, codes, threshold, reasons, node_keys, node_scores, "
     "tail, quote) -> list[bytes] | None: see the C source."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "streaming.engine._encode",
    "JSON predictions in C, byte for byte the Python's (see the C source).", -1, methods,
};

PyMODINIT_FUNC PyInit__encode(void) { return PyModule_Create(&module); }
