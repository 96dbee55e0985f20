/* The state stage's hot path in C: streaming.state.store's apply_many loop and _features,
 * for one run of events of one partition per call, with the same answers to the last bit.
 *
 * apply(plan, held, dirty, late, keys, ts, offsets, columns, start, end, out, wm, applied)
 *     -> (wm, applied, replays)
 *
 *   plan     (stride, grace, horizon, empty, windows), built once by PartitionState:
 *            empty: tuple of floats (a feature's value over an empty window);
 *            windows: tuple of (window, ((slot, kind, col, cap), ...)), kind a KIND_* code.
 *   held     the partition's dict key -> array('d') of rows (ts, offset, field...), sorted
 *            by (ts, offset); changed in place: rows appended, inserted, pruned, new keys.
 *   dirty    dict: key -> its rows, for the keys whose rows changed (the changelog reads
 *            them from here); late: dict offset -> the time it was scored at.
 *   keys, ts, offsets, columns[i]: sequences over the poll batch; events start..end-1 are
 *            applied (columns already vocabulary-coded, in spec.fields order).
 *   out      a writable C-contiguous float64 buffer of rows of len(empty); event i's
 *            features go to row i.
 *   wm       the partition's event time (streaming.state.store._NO_TIME before any event).
 *
 * gather(msgs, records, ts_name, fields, coded, vocabulary, values) -> (keys, runs, rows)
 *     a poll batch's inputs in one call: keys, [(partition, start, end)] runs and a float64
 *     buffer of (ts, offset, field...) rows, fields coded where ``coded`` says; then
 * apply_rows(plan, held, dirty, late, keys, rows, start, end, out, wm, applied)
 *     is apply for one partition run of that batch (StateStage.compute's path: the
 *     per-message calls in Python lists were half the stage's cost in a worker).
 *
 * Unsupported is raised, before anything changes, when the run holds what the C path does
 * not answer for: a time or offset that is not an int within +-2**52 (doubles compare them
 * exactly only there), a field value that is not a number. The caller then runs the Python
 * path, which gives its answer or its error as it always did.
 *
 * Sums are CPython's math.fsum (msum: Shewchuk's exact partials, then the half-even
 * correction), so they are bit-identical; fsum(seq) is exported for the tests.
 *
 * Arrays: array('d') has no C API, so its struct is declared here as CPython (3.8-3.13) lays
 * it out, and checked at import against a real array (size, data pointer, capacity, type
 * code, buffer exports); any difference raises ImportError and the Python path runs alone.
 * A key's array is resized here as the array module resizes it (PyMem_Realloc), never while
 * it exports a buffer. The arrays made here are untracked by the cyclic collector: they hold
 * no objects, so no cycle can go through them, and 100,000 cards' arrays were a collector pass
 * over 100,000 objects for nothing.
 *
 * The GIL is held throughout; no state but the module's Unsupported class, the array type and
 * a scratch buffer.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "_buffers.h"

enum { KIND_COUNT, KIND_SINCE_LAST, KIND_SUM, KIND_MEAN, KIND_DISTINCT, KIND_MAX, KIND_LAST };

#define EXACT_LIMIT (INT64_C(1) << 52)
#define NUM_PARTIALS 32

/* CPython's arrayobject (Modules/arraymodule.c), verified by check_layout() at import. */
typedef struct {
    char typecode;
    int itemsize;
} DescrHead;

typedef struct {
    PyObject_VAR_HEAD
    char *ob_item;
    Py_ssize_t allocated;
    const DescrHead *ob_descr;
    PyObject *weakreflist;
    Py_ssize_t ob_exports;
} ArrayObject;

static PyObject *Unsupported;
static PyObject *ArrayType;
static const DescrHead *DescrD; /* array('d')'s type descriptor, taken at import */

/* ------------------------------------------------------------------ math.fsum */

/* math.fsum over n doubles at stride step; 0 on success, -1 with Python's exception set
 * (OverflowError "intermediate overflow in fsum", ValueError "-inf + inf in fsum"). */
static int msum(const double *v, Py_ssize_t n, Py_ssize_t step, double *result) {
    double x, y, t, ps[NUM_PARTIALS], *p = ps;
    double xsave, special_sum = 0.0, inf_sum = 0.0;
    double hi, yr, lo = 0.0;
    Py_ssize_t i, j, k, np = 0, m = NUM_PARTIALS;

    for (k = 0; k < n; k++) {
        x = v[k * step];
        xsave = x;
        for (i = j = 0; j < np; j++) {
            y = p[j];
            if (fabs(x) < fabs(y)) {
                t = x;
                x = y;
                y = t;
            }
            hi = x + y;
            yr = hi - x;
            lo = y - yr;
            if (lo != 0.0) p[i++] = lo;
            x = hi;
        }
        np = i;
        if (x != 0.0) {
            if (!isfinite(x)) {
                if (isfinite(xsave)) {
                    PyErr_SetString(PyExc_OverflowError, "intermediate overflow in fsum");
                    goto error;
                }
                if (isinf(xsave)) inf_sum += xsave;
                special_sum += xsave;
                np = 0;
            } else {
                if (np >= m) {
                    Py_ssize_t grown = 2 * m;
                    double *q = PyMem_Malloc(sizeof(double) * grown);
                    if (q == NULL) {
                        PyErr_NoMemory();
                        goto error;
                    }
                    memcpy(q, p, sizeof(double) * np);
                    if (p != ps) PyMem_Free(p);
                    p = q;
                    m = grown;
                }
                p[np++] = x;
            }
        }
    }
    if (special_sum != 0.0) {
        if (isnan(inf_sum)) {
            PyErr_SetString(PyExc_ValueError, "-inf + inf in fsum");
            goto error;
        }
        *result = special_sum;
        goto done;
    }
    hi = 0.0;
    if (np > 0) {
        hi = p[--np];
        while (np > 0) {
            x = hi;
            y = p[--np];
            hi = x + y;
            yr = hi - x;
            lo = y - yr;
            if (lo != 0.0) break;
        }
        if (np > 0 && ((lo < 0.0 && p[np - 1] < 0.0) || (lo > 0.0 && p[np - 1] > 0.0))) {
            y = lo * 2.0;
            x = hi + y;
            yr = x - hi;
            if (y == yr) hi = x;
        }
    }
    *result = hi;
done:
    if (p != ps) PyMem_Free(p);
    return 0;
error:
    if (p != ps) PyMem_Free(p);
    return -1;
}

static PyObject *py_fsum(PyObject *self, PyObject *seq) {
    PyObject *fast = PySequence_Fast(seq, "fsum takes a sequence");
    Py_ssize_t n, i;
    double *v, r;
    if (fast == NULL) return NULL;
    n = PySequence_Fast_GET_SIZE(fast);
    v = PyMem_Malloc(sizeof(double) * (n ? n : 1));
    if (v == NULL) {
        Py_DECREF(fast);
        return PyErr_NoMemory();
    }
    for (i = 0; i < n; i++) {
        v[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(fast, i));
        if (v[i] == -1.0 && PyErr_Occurred()) {
            PyMem_Free(v);
            Py_DECREF(fast);
            return NULL;
        }
    }
    Py_DECREF(fast);
    if (msum(v, n, 1, &r) < 0) {
        PyMem_Free(v);
        return NULL;
    }
    PyMem_Free(v);
    return PyFloat_FromDouble(r);
}

/* ------------------------------------------------------------------ the plan */

typedef struct {
    int slot, kind;
    Py_ssize_t col, cap;
} Agg;

typedef struct {
    int64_t window;
    Py_ssize_t first, count; /* its aggregates: aggs[first : first + count] */
} Window;

typedef struct {
    Py_ssize_t stride, width, nwin, nagg;
    int64_t grace, horizon;
    double *empty;
    Window *win;
    Agg *aggs;
} Plan;

static void plan_free(Plan *p) {
    PyMem_Free(p->empty);
    PyMem_Free(p->win);
    PyMem_Free(p->aggs);
}

static int plan_read(PyObject *t, Plan *p) {
    PyObject *empty, *windows;
    Py_ssize_t i, j, a = 0;
    memset(p, 0, sizeof(*p));
    if (!PyArg_ParseTuple(t, "nLLO!O!", &p->stride, &p->grace, &p->horizon, &PyTuple_Type,
                          &empty, &PyTuple_Type, &windows))
        return -1;
    if (p->grace < 0 || p->grace > EXACT_LIMIT || p->horizon < 0 || p->horizon > EXACT_LIMIT ||
        p->stride < 2) {
        PyErr_SetString(Unsupported, "plan outside the exact range");
        return -1;
    }
    p->width = PyTuple_GET_SIZE(empty);
    p->nwin = PyTuple_GET_SIZE(windows);
    p->empty = PyMem_Malloc(sizeof(double) * (p->width ? p->width : 1));
    p->win = PyMem_Malloc(sizeof(Window) * (p->nwin ? p->nwin : 1));
    for (i = 0; i < p->nwin; i++) {
        PyObject *w = PyTuple_GET_ITEM(windows, i);
        if (!PyTuple_Check(w) || PyTuple_GET_SIZE(w) != 2 ||
            !PyTuple_Check(PyTuple_GET_ITEM(w, 1))) {
            PyErr_SetString(PyExc_TypeError, "plan: a window is (window, aggregates)");
            goto error;
        }
        p->nagg += PyTuple_GET_SIZE(PyTuple_GET_ITEM(w, 1));
    }
    p->aggs = PyMem_Malloc(sizeof(Agg) * (p->nagg ? p->nagg : 1));
    if (p->empty == NULL || p->win == NULL || p->aggs == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    for (i = 0; i < p->width; i++) {
        p->empty[i] = PyFloat_AsDouble(PyTuple_GET_ITEM(empty, i));
        if (p->empty[i] == -1.0 && PyErr_Occurred()) goto error;
    }
    for (i = 0; i < p->nwin; i++) {
        PyObject *w = PyTuple_GET_ITEM(windows, i), *aggs = PyTuple_GET_ITEM(w, 1);
        p->win[i].window = PyLong_AsLongLong(PyTuple_GET_ITEM(w, 0));
        if (p->win[i].window == -1 && PyErr_Occurred()) goto error;
        if (p->win[i].window <= 0 || p->win[i].window > EXACT_LIMIT) {
            PyErr_SetString(Unsupported, "window outside the exact range");
            goto error;
        }
        p->win[i].first = a;
        p->win[i].count = PyTuple_GET_SIZE(aggs);
        for (j = 0; j < p->win[i].count; j++, a++) {
            Agg *g = &p->aggs[a];
            if (!PyArg_ParseTuple(PyTuple_GET_ITEM(aggs, j), "innn", &g->slot, &g->kind, &g->col,
                                  &g->cap))
                goto error;
            if (g->slot < 0 || g->slot >= p->width || g->kind < KIND_COUNT ||
                g->kind > KIND_LAST || g->col >= p->stride ||
                (g->kind >= KIND_SUM && g->col < 2) || g->cap < 1) {
                PyErr_SetString(PyExc_ValueError, "plan: an aggregate out of range");
                goto error;
            }
        }
    }
    return 0;
error:
    plan_free(p);
    return -1;
}

/* ------------------------------------------------------------------ features */

/* Scratch for distinct counts: an open-addressed set of doubles' bits. */
static uint64_t *seen_bits;
static unsigned char *seen_used;
static Py_ssize_t seen_size;

static int seen_reserve(Py_ssize_t want) {
    Py_ssize_t size = 16;
    while (size < 2 * want) size *= 2;
    if (size <= seen_size) return 0;
    PyMem_Free(seen_bits);
    PyMem_Free(seen_used);
    seen_bits = PyMem_Malloc(sizeof(uint64_t) * size);
    seen_used = PyMem_Malloc(size);
    if (seen_bits == NULL || seen_used == NULL) {
        PyMem_Free(seen_bits);
        PyMem_Free(seen_used);
        seen_bits = NULL;
        seen_used = NULL;
        seen_size = 0;
        PyErr_NoMemory();
        return -1;
    }
    seen_size = size;
    return 0;
}

/* len(set(values)) capped at cap, as Python's set of floats counts them: equal values (0.0
 * and -0.0 too) once, each NaN apart (each is a new float object, unequal to all). */
static int distinct(const double *v, Py_ssize_t n, Py_ssize_t step, Py_ssize_t cap,
                    double *result) {
    Py_ssize_t want = n < cap ? n : cap, count = 0, k, size, mask;
    if (seen_reserve(want) < 0) return -1;
    size = 16;
    while (size < 2 * want) size *= 2;
    mask = size - 1;
    memset(seen_used, 0, size);
    for (k = 0; k < n && count < cap; k++) {
        double x = v[k * step];
        uint64_t bits, h;
        Py_ssize_t at;
        if (isnan(x)) {
            count++;
            continue;
        }
        if (x == 0.0) x = 0.0; /* -0.0 equals 0.0 */
        memcpy(&bits, &x, sizeof bits);
        h = bits * UINT64_C(0x9E3779B97F4A7C15);
        at = (Py_ssize_t)(h >> 32) & mask;
        while (seen_used[at] && seen_bits[at] != bits) at = (at + 1) & mask;
        if (!seen_used[at]) {
            seen_used[at] = 1;
            seen_bits[at] = bits;
            count++;
        }
    }
    *result = (double)count;
    return 0;
}

/* bisect_right over the ts column of the first hi rows: the first row with ts > x. */
static Py_ssize_t bisect_ts(const double *rows, Py_ssize_t stride, Py_ssize_t lo, Py_ssize_t hi,
                            double x) {
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (x < rows[mid * stride])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* store._features: the aggregates over the first hi rows with ts in (t - window, t]. */
static int features(const Plan *p, const double *rows, Py_ssize_t hi, int64_t t, double *out) {
    Py_ssize_t s = p->stride, w, a;
    memcpy(out, p->empty, sizeof(double) * p->width);
    if (hi == 0) return 0;
    for (w = 0; w < p->nwin; w++) {
        Py_ssize_t lo = bisect_ts(rows, s, 0, hi, (double)(t - p->win[w].window));
        if (lo == hi) continue;
        for (a = p->win[w].first; a < p->win[w].first + p->win[w].count; a++) {
            const Agg *g = &p->aggs[a];
            const double *col = rows + lo * s + g->col;
            Py_ssize_t n = hi - lo, k;
            double r;
            switch (g->kind) {
            case KIND_COUNT:
                out[g->slot] = (double)n;
                break;
            case KIND_SINCE_LAST:
                out[g->slot] = ((double)t - rows[(hi - 1) * s]) / 1000.0;
                break;
            case KIND_SUM:
                if (msum(col, n, s, &r) < 0) return -1;
                out[g->slot] = r;
                break;
            case KIND_MEAN:
                if (msum(col, n, s, &r) < 0) return -1;
                out[g->slot] = r / (double)n;
                break;
            case KIND_DISTINCT:
                if (distinct(col, n, s, g->cap, &r) < 0) return -1;
                out[g->slot] = r;
                break;
            case KIND_MAX:
                r = col[0];
                for (k = 1; k < n; k++)
                    if (col[k * s] > r) r = col[k * s];
                out[g->slot] = r;
                break;
            default: /* last */
                out[g->slot] = rows[(hi - 1) * s + g->col];
            }
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ arrays */

static int array_resize(ArrayObject *a, Py_ssize_t size) {
    size_t grown;
    char *items;
    if (a->ob_exports > 0 && size != Py_SIZE(a)) {
        PyErr_SetString(PyExc_BufferError, "cannot resize an array that is exporting buffers");
        return -1;
    }
    if (a->allocated >= size && Py_SIZE(a) < size + 16 && a->ob_item != NULL) {
        Py_SET_SIZE(a, size);
        return 0;
    }
    grown = (size_t)((size >> 4) + (Py_SIZE(a) < 8 ? 3 : 7) + size);
    if (grown > PY_SSIZE_T_MAX / sizeof(double)) {
        PyErr_NoMemory();
        return -1;
    }
    items = PyMem_Realloc(a->ob_item, grown * sizeof(double));
    if (items == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    a->ob_item = items;
    a->allocated = (Py_ssize_t)grown;
    Py_SET_SIZE(a, size);
    return 0;
}

/* array('d', row) as the array module makes an empty one (newarrayobject: tp_alloc zeroes
 * it, the descriptor of 'd' set), without parsing arguments, then sized. */
static ArrayObject *new_rows(const double *row, Py_ssize_t stride) {
    PyTypeObject *type = (PyTypeObject *)ArrayType;
    ArrayObject *a = (ArrayObject *)type->tp_alloc(type, 0);
    if (a == NULL) return NULL;
    a->ob_descr = DescrD;
    if (array_resize(a, stride) < 0) {
        Py_DECREF(a);
        return NULL;
    }
    memcpy(a->ob_item, row, sizeof(double) * stride);
    PyObject_GC_UnTrack(a);
    return a;
}

static ArrayObject *as_rows(PyObject *v, Py_ssize_t stride) {
    ArrayObject *a = (ArrayObject *)v;
    if (Py_TYPE(v) != (PyTypeObject *)ArrayType || a->ob_descr->typecode != 'd' ||
        Py_SIZE(a) % stride) {
        PyErr_SetString(PyExc_TypeError, "a key's state must be an array('d') of whole rows");
        return NULL;
    }
    return a;
}

/* ------------------------------------------------------------------ apply */

/* An int (or an integer such as numpy's, by __index__) within +-2**52; else *ok = 0. */
static int64_t as_exact_int(PyObject *v, int *ok) {
    int overflow;
    long long x;
    PyObject *i;
    if (PyLong_CheckExact(v)) {
        x = PyLong_AsLongLongAndOverflow(v, &overflow);
    } else if (!PyFloat_Check(v) && (i = PyNumber_Index(v)) != NULL) {
        x = PyLong_AsLongLongAndOverflow(i, &overflow);
        Py_DECREF(i);
    } else {
        PyErr_Clear();
        *ok = 0;
        return 0;
    }
    if (overflow || x > EXACT_LIMIT || x < -EXACT_LIMIT) *ok = 0;
    return (int64_t)x;
}

/* One event read again: features from its key's rows with a smaller offset only. */
static int replay(const Plan *p, PyObject *held, PyObject *late, PyObject *key, PyObject *off_obj,
                  int64_t offset, int64_t ts, double *out) {
    Py_ssize_t s = p->stride, n, i, kept = 0;
    double *earlier;
    int64_t t = ts;
    PyObject *at = PyDict_GetItemWithError(late, off_obj), *rows_obj;
    ArrayObject *rows;
    int rc;
    if (at == NULL && PyErr_Occurred()) return -1;
    if (at != NULL) {
        t = PyLong_AsLongLong(at);
        if (t == -1 && PyErr_Occurred()) return -1;
    }
    rows_obj = PyDict_GetItemWithError(held, key);
    if (rows_obj == NULL) {
        if (PyErr_Occurred()) return -1;
        memcpy(out, p->empty, sizeof(double) * p->width);
        return 0;
    }
    if ((rows = as_rows(rows_obj, s)) == NULL) return -1;
    n = Py_SIZE(rows) / s;
    earlier = PyMem_Malloc(sizeof(double) * s * (n ? n : 1));
    if (earlier == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (i = 0; i < n; i++) {
        const double *r = (const double *)rows->ob_item + i * s;
        if (r[1] < (double)offset) memcpy(earlier + s * kept++, r, sizeof(double) * s);
    }
    rc = features(p, earlier, bisect_ts(earlier, s, 0, kept, (double)t), t, out);
    PyMem_Free(earlier);
    return rc;
}

/* The events of a run, converted: row i of ``vals`` is (ts, offset, field...) as doubles
 * (ts and offset exact ints within +-2**52), ``keys`` their keys. Applies them in order:
 * features into ``outp`` (a row per event), the state changed; *wm, *applied and *replays
 * are updated. -1 with an exception set on an error (what was applied before it stays). */
static int apply_events(const Plan *p, PyObject *held, PyObject *dirty, PyObject *late,
                        PyObject *const *keys, Py_ssize_t count, const double *vals,
                        double *outp, int64_t *wm_io, int64_t *applied_io,
                        Py_ssize_t *replays) {
    Py_ssize_t s = p->stride, i;
    int64_t wm = *wm_io, applied = *applied_io;
    int rc = -1;
    for (i = 0; i < count; i++) {
        PyObject *key = keys[i], *rows_obj;
        const double *row = vals + i * s;
        double *feat = outp + i * p->width;
        int64_t ts = (int64_t)row[0], offset = (int64_t)row[1], limit;
        ArrayObject *rows;
        Py_ssize_t n, at;

        if (offset <= applied) {
            PyObject *off_obj = PyLong_FromLongLong(offset);
            int r;
            if (off_obj == NULL) goto exit;
            r = replay(p, held, late, key, off_obj, offset, ts, feat);
            Py_DECREF(off_obj);
            if (r < 0) goto exit;
            (*replays)++;
            continue;
        }
        applied = offset;
        /* The key's rows are looked up after the calls that may run Python code (a key's
         * __hash__ or __eq__) and used before any other: a borrowed reference stays valid. */
        if (ts < wm - p->grace) { /* late: as of wm, not kept */
            PyObject *t = PyLong_FromLongLong(wm), *off_obj = PyLong_FromLongLong(offset);
            int r = t == NULL || off_obj == NULL ? -1 : PyDict_SetItem(late, off_obj, t);
            Py_XDECREF(t);
            Py_XDECREF(off_obj);
            if (r < 0) goto exit;
            rows_obj = PyDict_GetItemWithError(held, key);
            if (rows_obj == NULL && PyErr_Occurred()) goto exit;
            if (rows_obj == NULL) {
                memcpy(feat, p->empty, sizeof(double) * p->width);
                continue;
            }
            if ((rows = as_rows(rows_obj, s)) == NULL) goto exit;
            if (features(p, (double *)rows->ob_item, Py_SIZE(rows) / s, wm, feat) < 0) goto exit;
            continue;
        }
        if (ts > wm) wm = ts;
        rows_obj = PyDict_GetItemWithError(held, key);
        if (rows_obj == NULL && PyErr_Occurred()) goto exit;
        if (rows_obj == NULL) { /* a key's first event: nothing to aggregate */
            ArrayObject *a = new_rows(row, s);
            int r;
            if (a == NULL) goto exit;
            r = PyDict_SetItem(held, key, (PyObject *)a);
            if (r == 0) r = PyDict_SetItem(dirty, key, (PyObject *)a);
            Py_DECREF(a);
            if (r < 0) goto exit;
            memcpy(feat, p->empty, sizeof(double) * p->width);
            continue;
        }
        { /* marked with its rows, which the changelog then reads without a lookup in held */
            int r;
            Py_INCREF(rows_obj); /* a key's __eq__ may run Python code; dirty keeps it after */
            r = PyDict_SetItem(dirty, key, rows_obj);
            Py_DECREF(rows_obj);
            if (r < 0) goto exit;
        }
        if ((rows = as_rows(rows_obj, s)) == NULL) goto exit;
        n = Py_SIZE(rows) / s;
        if (n == 0) {
            PyErr_SetString(PyExc_IndexError, "array index out of range");
            goto exit;
        }
        if ((double)ts >= ((double *)rows->ob_item)[(n - 1) * s]) { /* in order: appended */
            if (features(p, (double *)rows->ob_item, n, ts, feat) < 0) goto exit;
            if (array_resize(rows, (n + 1) * s) < 0) goto exit;
            memcpy((double *)rows->ob_item + n * s, row, sizeof(double) * s);
        } else {
            at = bisect_ts((double *)rows->ob_item, s, 0, n, (double)ts);
            if (features(p, (double *)rows->ob_item, at, ts, feat) < 0) goto exit;
            if (array_resize(rows, (n + 1) * s) < 0) goto exit;
            memmove((double *)rows->ob_item + (at + 1) * s, (double *)rows->ob_item + at * s,
                    sizeof(double) * s * (n - at));
            memcpy((double *)rows->ob_item + at * s, row, sizeof(double) * s);
        }
        n += 1;
        limit = wm - p->horizon;
        if (((double *)rows->ob_item)[0] <= (double)limit) {
            Py_ssize_t drop = bisect_ts((double *)rows->ob_item, s, 0, n, (double)limit);
            memmove(rows->ob_item, (double *)rows->ob_item + drop * s,
                    sizeof(double) * s * (n - drop));
            if (array_resize(rows, (n - drop) * s) < 0) goto exit;
        }
    }
    rc = 0;
exit:
    *wm_io = wm;
    *applied_io = applied;
    return rc;
}

/* A writable C-contiguous float64 buffer of at least ``rows`` rows of ``width``. */
static int take_out(PyObject *obj, Py_buffer *out, Py_ssize_t rows, Py_ssize_t width) {
    if (PyObject_GetBuffer(obj, out, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return -1;
    if (out->itemsize != 8 || out->format == NULL ||
        !(strcmp(out->format, "d") == 0 || strcmp(out->format, "<d") == 0 ||
          strcmp(out->format, "=d") == 0 || strcmp(out->format, "@d") == 0) ||
        out->len < (Py_ssize_t)(rows * width * sizeof(double))) {
        PyErr_SetString(PyExc_ValueError, "out: a float64 buffer of a row per event");
        PyBuffer_Release(out);
        return -1;
    }
    return 0;
}

static int wm_supported(long long wm_in) {
    if (wm_in != -(INT64_C(1) << 62) && (wm_in > EXACT_LIMIT || wm_in < -EXACT_LIMIT)) {
        PyErr_SetString(Unsupported, "a value the C path does not answer for");
        return 0;
    }
    return 1;
}

static PyObject *py_apply(PyObject *self, PyObject *args) {
    PyObject *plan_t, *held, *dirty, *late, *columns, *out_obj, *result = NULL;
    PyObject *keys_obj, *ts_obj, *off_obj;
    PyObject *fast_keys = NULL, *fast_ts = NULL, *fast_off = NULL, *fast_cols = NULL;
    PyObject **colv = NULL;
    Py_ssize_t start, end, ncols = 0, i, c, s, replays = 0;
    long long wm_in, applied_in;
    int64_t wm, applied;
    double *vals = NULL;
    Py_buffer out = {0};
    Plan p;
    int ok = 1;

    if (!PyArg_ParseTuple(args, "O!O!O!O!OOOOnnOLL", &PyTuple_Type, &plan_t, &PyDict_Type, &held,
                          &PyDict_Type, &dirty, &PyDict_Type, &late, &keys_obj, &ts_obj, &off_obj,
                          &columns, &start, &end, &out_obj, &wm_in, &applied_in))
        return NULL;
    fast_keys = PySequence_Fast(keys_obj, "keys must be a sequence");
    fast_ts = fast_keys ? PySequence_Fast(ts_obj, "ts must be a sequence") : NULL;
    fast_off = fast_ts ? PySequence_Fast(off_obj, "offsets must be a sequence") : NULL;
    fast_cols = fast_off ? PySequence_Fast(columns, "columns must be a sequence") : NULL;
    if (fast_cols == NULL) goto exit_noplan;
    if (plan_read(plan_t, &p) < 0) goto exit_noplan;
    s = p.stride;
    ncols = PySequence_Fast_GET_SIZE(fast_cols);
    if (ncols != s - 2) {
        PyErr_SetString(PyExc_ValueError, "columns: one per field of the plan");
        goto exit;
    }
    if (start < 0 || end < start || end > PySequence_Fast_GET_SIZE(fast_keys) ||
        end > PySequence_Fast_GET_SIZE(fast_ts) || end > PySequence_Fast_GET_SIZE(fast_off)) {
        PyErr_SetString(PyExc_IndexError, "start/end outside the sequences");
        goto exit;
    }
    colv = PyMem_Calloc(ncols ? ncols : 1, sizeof(PyObject *));
    if (colv == NULL) {
        PyErr_NoMemory();
        goto exit;
    }
    for (c = 0; c < ncols; c++) {
        colv[c] = PySequence_Fast(PySequence_Fast_GET_ITEM(fast_cols, c), "a column");
        if (colv[c] == NULL) goto exit;
        if (PySequence_Fast_GET_SIZE(colv[c]) < end) {
            PyErr_SetString(PyExc_IndexError, "a column shorter than end");
            goto exit;
        }
    }
    if (take_out(out_obj, &out, end, p.width) < 0) goto exit;

    /* Everything converted and checked before anything changes. */
    {
        Py_ssize_t n = end - start;
        vals = PyMem_Malloc(sizeof(double) * s * (n ? n : 1));
        if (vals == NULL) {
            PyErr_NoMemory();
            goto exit;
        }
        if (!wm_supported(wm_in)) goto exit;
        for (i = 0; i < n && ok; i++) {
            double *row = vals + i * s;
            row[0] = (double)as_exact_int(PySequence_Fast_GET_ITEM(fast_ts, start + i), &ok);
            row[1] = (double)as_exact_int(PySequence_Fast_GET_ITEM(fast_off, start + i), &ok);
            for (c = 0; c < ncols && ok; c++) {
                /* array('d') converts a value so (PyArg_Parse "d") */
                row[2 + c] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(colv[c], start + i));
                if (row[2 + c] == -1.0 && PyErr_Occurred()) {
                    PyErr_Clear();
                    ok = 0;
                }
            }
        }
        if (!ok) {
            PyErr_SetString(Unsupported, "a value the C path does not answer for");
            goto exit;
        }
    }

    wm = wm_in;
    applied = applied_in;
    if (apply_events(&p, held, dirty, late, PySequence_Fast_ITEMS(fast_keys) + start, end - start,
                     vals, (double *)out.buf + start * p.width, &wm, &applied, &replays) == 0)
        result = Py_BuildValue("LLn", (long long)wm, (long long)applied, replays);
exit:
    plan_free(&p);
exit_noplan:
    if (out.obj != NULL) PyBuffer_Release(&out);
    if (colv != NULL) {
        for (c = 0; c < ncols; c++) Py_XDECREF(colv[c]);
        PyMem_Free(colv);
    }
    PyMem_Free(vals);
    Py_XDECREF(fast_keys);
    Py_XDECREF(fast_ts);
    Py_XDECREF(fast_off);
    Py_XDECREF(fast_cols);
    return result;
}

/* apply_rows(plan, held, dirty, late, keys, rows, start, end, out, wm, applied)
 *     -> (wm, applied, replays)
 * apply for events start..end-1 of a batch ``gather`` made: ``rows`` its float64 buffer of
 * (ts, offset, field...) per event, already checked and coded. */
static PyObject *py_apply_rows(PyObject *self, PyObject *args) {
    PyObject *plan_t, *held, *dirty, *late, *keys, *rows_obj, *out_obj, *result = NULL;
    Py_ssize_t start, end, replays = 0;
    long long wm_in, applied_in;
    int64_t wm, applied;
    Py_buffer rows = {0}, out = {0};
    Plan p;

    if (!PyArg_ParseTuple(args, "O!O!O!O!O!OnnOLL", &PyTuple_Type, &plan_t, &PyDict_Type, &held,
                          &PyDict_Type, &dirty, &PyDict_Type, &late, &PyList_Type, &keys,
                          &rows_obj, &start, &end, &out_obj, &wm_in, &applied_in))
        return NULL;
    if (plan_read(plan_t, &p) < 0) return NULL;
    if (PyObject_GetBuffer(rows_obj, &rows, PyBUF_C_CONTIGUOUS) < 0) goto exit;
    if (start < 0 || end < start || end > PyList_GET_SIZE(keys) ||
        rows.len < (Py_ssize_t)(end * p.stride * sizeof(double))) {
        PyErr_SetString(PyExc_IndexError, "start/end outside the batch");
        goto exit;
    }
    if (take_out(out_obj, &out, end, p.width) < 0) goto exit;
    if (!wm_supported(wm_in)) goto exit;
    wm = wm_in;
    applied = applied_in;
    if (apply_events(&p, held, dirty, late, &PyList_GET_ITEM(keys, start), end - start,
                     (const double *)rows.buf + start * p.stride,
                     (double *)out.buf + start * p.width, &wm, &applied, &replays) == 0)
        result = Py_BuildValue("LLn", (long long)wm, (long long)applied, replays);
exit:
    plan_free(&p);
    if (rows.obj != NULL) PyBuffer_Release(&rows);
    if (out.obj != NULL) PyBuffer_Release(&out);
    return result;
}

/* ------------------------------------------------------------------ gather */

static PyObject *str_offset, *str_key, *str_partition, *str_getattribute, *object_getattribute;

/* Whether getattr(obj, name) of an instance of ``type`` is its instance dict's entry when it
 * has one: the type keeps object's __getattribute__ and has no class attribute (so no
 * descriptor) of that name anywhere in its MRO. Pydantic models qualify: their fields are
 * not class attributes, and __getattr__ (which they have) only runs for a missing name. */
static int plain_attr(PyTypeObject *type, PyObject *name) {
    return _PyType_Lookup(type, str_getattribute) == object_getattribute &&
           _PyType_Lookup(type, name) == NULL;
}

/* getattr(r, name), through r's instance dict when ``fast`` (plain_attr holds for its type):
 * a dict lookup instead of the attribute protocol; the protocol where the dict has no entry. */
static PyObject *record_attr(PyObject *r, PyObject *dict, PyObject *name) {
    if (dict != NULL) {
        PyObject *v = PyDict_GetItemWithError(dict, name);
        if (v != NULL) {
            Py_INCREF(v);
            return v;
        }
        if (PyErr_Occurred()) return NULL;
    }
    return PyObject_GetAttr(r, name);
}

/* gather(msgs, records, ts_name, fields, coded, vocabulary, values) -> (keys, runs, rows)
 * The stage's inputs for a poll batch in one call (StateStage.compute): per message its
 * key(), offset() and partition(), per record its event time and fields (attribute names).
 * ``rows``: bytes of float64 (ts, offset, field...) per event, the fields where ``coded[f]``
 * as codes of the store.Vocabulary ``vocabulary`` (column by column, as ``code`` does);
 * ``runs``: [(partition, start, end)], one per run of one partition.
 * Unsupported when a time or offset is not an int within +-2**52, or a field not coded is not
 * a number (the Python path then answers); the vocabulary may have grown by then, as the
 * Python path would grow it too. */
static PyObject *py_gather(PyObject *self, PyObject *args) {
    PyObject *msgs, *records, *ts_name, *fields, *coded, *vocab, *values;
    PyObject *fm = NULL, *fr = NULL, *keys = NULL, *runs = NULL, *rows = NULL, *result = NULL;
    PyObject **held = NULL; /* the coded fields' values, column by column */
    Py_ssize_t n, nf, i, f, nheld = 0, s, run_start = 0;
    unsigned char *is_coded = NULL;
    PyTypeObject *plain_type = NULL;
    int plain = 0;
    long part = 0, run_part = 0;
    double *vals;
    int ok = 1;

    if (!PyArg_ParseTuple(args, "OOUO!O!O!O!", &msgs, &records, &ts_name, &PyTuple_Type, &fields,
                          &PyTuple_Type, &coded, &PyDict_Type, &vocab, &PyList_Type, &values))
        return NULL;
    nf = PyTuple_GET_SIZE(fields);
    s = 2 + nf;
    if (PyTuple_GET_SIZE(coded) != nf) {
        PyErr_SetString(PyExc_ValueError, "coded: one flag per field");
        return NULL;
    }
    if ((fm = PySequence_Fast(msgs, "msgs must be a sequence")) == NULL) return NULL;
    if ((fr = PySequence_Fast(records, "records must be a sequence")) == NULL) goto exit;
    n = PySequence_Fast_GET_SIZE(fm);
    if (PySequence_Fast_GET_SIZE(fr) != n) {
        PyErr_SetString(PyExc_ValueError, "one record per message");
        goto exit;
    }
    is_coded = PyMem_Calloc(nf ? nf : 1, 1);
    held = PyMem_Calloc(n * nf > 0 ? n * nf : 1, sizeof(PyObject *));
    keys = PyList_New(n);
    runs = PyList_New(0);
    rows = PyBytes_FromStringAndSize(NULL, sizeof(double) * s * n);
    if (is_coded == NULL || held == NULL) {
        PyErr_NoMemory();
        goto exit;
    }
    if (keys == NULL || runs == NULL || rows == NULL) goto exit;
    for (f = 0; f < nf; f++) {
        int t = PyObject_IsTrue(PyTuple_GET_ITEM(coded, f));
        if (t < 0) goto exit;
        is_coded[f] = (unsigned char)t;
    }
    vals = (double *)PyBytes_AS_STRING(rows);
    for (i = 0; i < n; i++) {
        PyObject *m = PySequence_Fast_GET_ITEM(fm, i), *r = PySequence_Fast_GET_ITEM(fr, i), *v;
        PyObject *dict = NULL;
        double *row = vals + i * s;
        if (Py_TYPE(r) != plain_type) { /* the records of a batch are of one type: once */
            plain_type = Py_TYPE(r);
            plain = plain_attr(plain_type, ts_name);
            for (f = 0; f < nf && plain; f++) plain = plain_attr(plain_type, PyTuple_GET_ITEM(fields, f));
        }
        if (plain) {
            PyObject **slot = _PyObject_GetDictPtr(r);
            dict = slot != NULL && *slot != NULL && PyDict_CheckExact(*slot) ? *slot : NULL;
        }
        if ((v = PyObject_CallMethodNoArgs(m, str_key)) == NULL) goto exit;
        PyList_SET_ITEM(keys, i, v);
        if ((v = PyObject_CallMethodNoArgs(m, str_partition)) == NULL) goto exit;
        part = PyLong_AsLong(v);
        Py_DECREF(v);
        if (part == -1 && PyErr_Occurred()) goto exit;
        if (i == 0) run_part = part;
        if (part != run_part) {
            PyObject *t = Py_BuildValue("(lnn)", run_part, run_start, i);
            if (t == NULL || PyList_Append(runs, t) < 0) {
                Py_XDECREF(t);
                goto exit;
            }
            Py_DECREF(t);
            run_part = part;
            run_start = i;
        }
        if ((v = PyObject_CallMethodNoArgs(m, str_offset)) == NULL) goto exit;
        row[1] = (double)as_exact_int(v, &ok);
        Py_DECREF(v);
        if ((v = record_attr(r, dict, ts_name)) == NULL) goto exit;
        row[0] = (double)as_exact_int(v, &ok);
        Py_DECREF(v);
        if (!ok) break;
        for (f = 0; f < nf; f++) {
            if ((v = record_attr(r, dict, PyTuple_GET_ITEM(fields, f))) == NULL) goto exit;
            if (is_coded[f]) { /* coded below, column by column */
                held[f * n + i] = v;
                nheld++;
                continue;
            }
            row[2 + f] = PyFloat_AsDouble(v);
            Py_DECREF(v);
            if (row[2 + f] == -1.0 && PyErr_Occurred()) {
                PyErr_Clear();
                ok = 0;
                break;
            }
        }
        if (!ok) break;
    }
    if (!ok) {
        PyErr_SetString(Unsupported, "a value the C path does not answer for");
        goto exit;
    }
    if (n) {
        PyObject *t = Py_BuildValue("(lnn)", run_part, run_start, n);
        if (t == NULL || PyList_Append(runs, t) < 0) {
            Py_XDECREF(t);
            goto exit;
        }
        Py_DECREF(t);
    }
    for (f = 0; f < nf; f++) {
        if (!is_coded[f]) continue;
        for (i = 0; i < n; i++) {
            PyObject *v = held[f * n + i], *c = PyDict_GetItemWithError(vocab, v);
            Py_ssize_t code;
            if (c == NULL) {
                if (PyErr_Occurred()) goto exit;
                code = PyDict_GET_SIZE(vocab);
                if ((c = PyLong_FromSsize_t(code)) == NULL) goto exit;
                if (PyDict_SetItem(vocab, v, c) < 0 || PyList_Append(values, v) < 0) {
                    Py_DECREF(c);
                    goto exit;
                }
                Py_DECREF(c);
            } else {
                code = PyLong_AsSsize_t(c);
                if (code == -1 && PyErr_Occurred()) goto exit;
            }
            vals[i * s + 2 + f] = (double)code;
        }
    }
    result = PyTuple_Pack(3, keys, runs, rows);
exit:
    if (held != NULL) {
        for (i = 0; i < n * nf && nheld; i++)
            if (held[i] != NULL) {
                Py_DECREF(held[i]);
                nheld--;
            }
        PyMem_Free(held);
    }
    PyMem_Free(is_coded);
    Py_XDECREF(keys);
    Py_XDECREF(runs);
    Py_XDECREF(rows);
    Py_XDECREF(fm);
    Py_XDECREF(fr);
    return result;
}

/* ------------------------------------------------------------------ expiry */

/* store.expire's scan: the keys whose rows are empty or whose newest event is at or before
 * ``limit``. Unsupported (nothing else happens) for a limit past +-2**52 or a value that is
 * not an array('d') of whole rows: the Python scan answers. */
static PyObject *py_expired(PyObject *self, PyObject *args) {
    PyObject *held, *key, *value, *out;
    Py_ssize_t stride, pos = 0;
    long long limit;
    if (!PyArg_ParseTuple(args, "O!nL", &PyDict_Type, &held, &stride, &limit)) return NULL;
    if (stride < 1 || limit > EXACT_LIMIT || limit < -EXACT_LIMIT) {
        PyErr_SetString(Unsupported, "limit outside the exact range");
        return NULL;
    }
    if ((out = PyList_New(0)) == NULL) return NULL;
    while (PyDict_Next(held, &pos, &key, &value)) {
        ArrayObject *a = (ArrayObject *)value;
        Py_ssize_t n;
        if (Py_TYPE(value) != (PyTypeObject *)ArrayType || a->ob_descr->typecode != 'd' ||
            Py_SIZE(a) % stride) {
            Py_DECREF(out);
            PyErr_SetString(Unsupported, "a key's state that is not an array('d') of rows");
            return NULL;
        }
        n = Py_SIZE(a);
        if ((n == 0 || ((double *)a->ob_item)[n - stride] <= (double)limit) &&
            PyList_Append(out, key) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

/* ------------------------------------------------------------------ the vocabulary */

/* [vocabulary[v] for v in column] for a store.Vocabulary: a value not seen yet gets the next
 * code, len(vocabulary), and is appended to ``values`` (its __missing__, without the call). */
static PyObject *py_code(PyObject *self, PyObject *args) {
    PyObject *vocab, *values, *column, *fast, *out;
    Py_ssize_t i, n;
    if (!PyArg_ParseTuple(args, "O!O!O", &PyDict_Type, &vocab, &PyList_Type, &values, &column))
        return NULL;
    fast = PySequence_Fast(column, "a column");
    if (fast == NULL) return NULL;
    n = PySequence_Fast_GET_SIZE(fast);
    out = PyList_New(n);
    if (out == NULL) goto error;
    for (i = 0; i < n; i++) {
        PyObject *v = PySequence_Fast_GET_ITEM(fast, i), *c = PyDict_GetItemWithError(vocab, v);
        if (c != NULL)
            Py_INCREF(c);
        else {
            if (PyErr_Occurred()) goto error;
            c = PyLong_FromSsize_t(PyDict_GET_SIZE(vocab));
            if (c == NULL) goto error;
            if (PyDict_SetItem(vocab, v, c) < 0 || PyList_Append(values, v) < 0) {
                Py_DECREF(c);
                goto error;
            }
        }
        PyList_SET_ITEM(out, i, c);
    }
    Py_DECREF(fast);
    return out;
error:
    Py_XDECREF(out);
    Py_DECREF(fast);
    return NULL;
}

/* The row positions of ``coded`` (a sequence of ints, each within 2..stride-1) into cols[];
 * -1 with ValueError otherwise. */
static int coded_positions(PyObject *coded, Py_ssize_t stride, Py_ssize_t **cols, Py_ssize_t *n) {
    PyObject *fast = PySequence_Fast(coded, "coded: a sequence of row positions");
    Py_ssize_t i;
    if (fast == NULL) return -1;
    *n = PySequence_Fast_GET_SIZE(fast);
    *cols = PyMem_Malloc(sizeof(Py_ssize_t) * (*n > 0 ? *n : 1));
    if (*cols == NULL) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    for (i = 0; i < *n; i++) {
        Py_ssize_t c = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(fast, i));
        if (c == -1 && PyErr_Occurred()) break;
        if (c < 2 || c >= stride) {
            PyErr_Format(PyExc_ValueError, "coded position %zd is not a field of rows of %zd", c,
                         stride);
            break;
        }
        (*cols)[i] = c;
    }
    Py_DECREF(fast);
    if (i < *n) {
        PyMem_Free(*cols);
        return -1;
    }
    return 0;
}

/* For each key's rows in the dicts of ``states`` (key -> array('d') of rows of ``stride``),
 * every code at the ``coded`` positions: fn(ctx, &code) may read or rewrite it; -1 stops. */
static int each_code(PyObject *states, PyObject *coded, Py_ssize_t stride,
                     int (*fn)(void *ctx, double *code), void *ctx) {
    PyObject *fast, *key, *value;
    Py_ssize_t *cols, nc, i, j, c, pos;
    int r = 0;
    if (stride < 3) {
        PyErr_SetString(PyExc_ValueError, "rows of (ts, offset, field...): stride >= 3");
        return -1;
    }
    if (coded_positions(coded, stride, &cols, &nc) < 0) return -1;
    fast = PySequence_Fast(states, "states: a sequence of dicts");
    if (fast == NULL) {
        PyMem_Free(cols);
        return -1;
    }
    for (i = 0; r == 0 && i < PySequence_Fast_GET_SIZE(fast); i++) {
        PyObject *d = PySequence_Fast_GET_ITEM(fast, i);
        if (!PyDict_Check(d)) {
            PyErr_SetString(PyExc_TypeError, "states: a sequence of dicts");
            r = -1;
            break;
        }
        pos = 0;
        while (r == 0 && PyDict_Next(d, &pos, &key, &value)) {
            ArrayObject *a = as_rows(value, stride);
            if (a == NULL) {
                r = -1;
                break;
            }
            double *rows = (double *)a->ob_item;
            Py_ssize_t n = Py_SIZE(a) / stride;
            for (j = 0; r == 0 && j < n; j++)
                for (c = 0; r == 0 && c < nc; c++) r = fn(ctx, rows + j * stride + cols[c]);
        }
    }
    Py_DECREF(fast);
    PyMem_Free(cols);
    return r;
}

typedef struct {
    char *live;
    Py_ssize_t size;
} LiveCtx;

static int mark_live(void *ctx, double *code) {
    LiveCtx *l = ctx;
    double c = *code;
    if (!(c >= 0 && c < (double)l->size) || c != floor(c)) {
        PyErr_Format(PyExc_ValueError, "a row holds code %g, not one of the vocabulary's %zd", c,
                     l->size);
        return -1;
    }
    l->live[(Py_ssize_t)c] = 1;
    return 0;
}

/* live_codes(states, coded, stride, size) -> bytearray of ``size``: 1 at each vocabulary code
 * that some key's rows hold (store.StateStage.prune). */
static PyObject *py_live_codes(PyObject *self, PyObject *args) {
    PyObject *states, *coded, *out;
    Py_ssize_t stride, size;
    LiveCtx ctx;
    if (!PyArg_ParseTuple(args, "OOnn", &states, &coded, &stride, &size)) return NULL;
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "size >= 0");
        return NULL;
    }
    out = PyByteArray_FromStringAndSize(NULL, size);
    if (out == NULL) return NULL;
    ctx.live = PyByteArray_AS_STRING(out);
    ctx.size = size;
    memset(ctx.live, 0, (size_t)size);
    if (each_code(states, coded, stride, mark_live, &ctx) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

typedef struct {
    const double *map;
    Py_ssize_t size;
} RecodeCtx;

static int recode_one(void *ctx, double *code) {
    RecodeCtx *m = ctx;
    double c = *code;
    if (!(c >= 0 && c < (double)m->size) || c != floor(c) || m->map[(Py_ssize_t)c] < 0) {
        PyErr_Format(PyExc_ValueError, "a row holds code %g, which the mapping does not keep", c);
        return -1;
    }
    *code = m->map[(Py_ssize_t)c];
    return 0;
}

/* recode(states, coded, stride, mapping): each code c at the coded positions becomes
 * mapping[c] (a float64 buffer; -1 for a code no row holds), in place. The caller checked the
 * rows with live_codes first: a ValueError here would leave them half recoded. */
static PyObject *py_recode(PyObject *self, PyObject *args) {
    PyObject *states, *coded, *mapping;
    Py_ssize_t stride;
    Py_buffer view;
    RecodeCtx ctx;
    int r;
    if (!PyArg_ParseTuple(args, "OOnO", &states, &coded, &stride, &mapping)) return NULL;
    if (take_buffer(mapping, &view, 'd', 0, "mapping") < 0) return NULL;
    ctx.map = view.buf;
    ctx.size = view.len / (Py_ssize_t)sizeof(double);
    r = each_code(states, coded, stride, recode_one, &ctx);
    PyBuffer_Release(&view);
    if (r < 0) return NULL;
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ the changelog's records */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* codec.encode_rows: a key's record, its codes' entries taken from ``labels`` (codec.Labels:
 * code -> b"code US value"; its __missing__ makes an entry, or raises when a value is not
 * plain text, and the caller then writes the table as JSON in Python). */
/* codec.Labels.__missing__ for a plain-text value, made here (the labels' values list is
 * ``values``); for anything else (not a str, a separator inside, not UTF-8-encodable, a code
 * outside the list) Labels.__missing__ itself answers, or raises. */
static PyObject *label_entry(PyObject *labels, PyObject *values, PyObject *code, double c) {
    PyObject *value, *entry;
    const char *text;
    char digits[32];
    Py_ssize_t size, nd;
    if (values == NULL || !PyList_Check(values) || c < 0 || c >= PyList_GET_SIZE(values) ||
        c != (double)(Py_ssize_t)c)
        return PyObject_GetItem(labels, code);
    value = PyList_GET_ITEM(values, (Py_ssize_t)c);
    if (!PyUnicode_CheckExact(value)) return PyObject_GetItem(labels, code);
    text = PyUnicode_AsUTF8AndSize(value, &size);
    if (text == NULL || memchr(text, 0x1f, size) != NULL || memchr(text, 0x1e, size) != NULL) {
        PyErr_Clear();
        return PyObject_GetItem(labels, code);
    }
    nd = snprintf(digits, sizeof digits, "%zd\x1f", (Py_ssize_t)c);
    entry = PyBytes_FromStringAndSize(NULL, nd + size);
    if (entry == NULL) return NULL;
    memcpy(PyBytes_AS_STRING(entry), digits, nd);
    memcpy(PyBytes_AS_STRING(entry) + nd, text, size);
    if (PyDict_SetItem(labels, code, entry) < 0) {
        Py_DECREF(entry);
        return NULL;
    }
    return entry;
}

/* A code's entry: from ``by_code`` (codec.Labels.by_code, the entries by int code, kept
 * here: no float made, nothing hashed), else from the labels dict or label_entry, then kept
 * in ``by_code``. */
static PyObject *entry_of(PyObject *labels, PyObject *values, PyObject *by_code, double c) {
    Py_ssize_t i = (Py_ssize_t)c;
    int whole = c >= 0 && c == (double)i && by_code != NULL && PyList_Check(by_code);
    PyObject *code, *entry;
    if (whole && i < PyList_GET_SIZE(by_code) && PyList_GET_ITEM(by_code, i) != Py_None) {
        entry = PyList_GET_ITEM(by_code, i);
        Py_INCREF(entry);
        return entry;
    }
    code = PyFloat_FromDouble(c);
    if (code == NULL) return NULL;
    entry = PyDict_GetItemWithError(labels, code); /* borrowed */
    if (entry != NULL)
        Py_INCREF(entry);
    else if (!PyErr_Occurred())
        entry = label_entry(labels, values, code, c);
    Py_DECREF(code);
    if (entry == NULL || !whole || !PyBytes_Check(entry)) return entry;
    while (PyList_GET_SIZE(by_code) <= i)
        if (PyList_Append(by_code, Py_None) < 0) {
            Py_DECREF(entry);
            return NULL;
        }
    Py_INCREF(entry);
    PyList_SetItem(by_code, i, entry); /* steals; the None it replaces goes */
    return entry;
}

#define SMALL 64

static PyObject *encode_one(PyObject *rows_obj, PyObject *fast, Py_ssize_t stride,
                            PyObject *labels, PyObject *values, PyObject *by_code,
                            long long applied) {
    PyObject **entries = NULL, *result = NULL, *entries_small[SMALL];
    Py_ssize_t n, ncoded, i, c, k, nused = 0, size;
    Py_buffer view = {0};
    double *used = NULL, used_small[SMALL];
    char *w;
    if (PyObject_GetBuffer(rows_obj, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    if (view.itemsize != 8 || view.format == NULL || strcmp(view.format, "d") != 0 ||
        stride < 1 || (view.len / 8) % stride) {
        PyErr_SetString(PyExc_ValueError, "rows: an array('d') of whole rows");
        goto exit;
    }
    n = view.len / 8 / stride;
    ncoded = PySequence_Fast_GET_SIZE(fast);
    used = n * ncoded <= SMALL ? used_small : PyMem_Malloc(sizeof(double) * n * ncoded);
    if (used == NULL) {
        PyErr_NoMemory();
        goto exit;
    }
    for (c = 0; c < ncoded; c++) {
        Py_ssize_t col = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(fast, c));
        if (col == -1 && PyErr_Occurred()) goto exit;
        if (col < 0 || col >= stride) {
            PyErr_SetString(PyExc_ValueError, "coded: a position outside the row");
            goto exit;
        }
        for (i = 0; i < n; i++) used[nused++] = ((double *)view.buf)[i * stride + col];
    }
    qsort(used, nused, sizeof(double), cmp_double);
    for (i = k = 0; i < nused; i++) /* codes are whole numbers: no NaN to keep apart */
        if (k == 0 || used[i] != used[k - 1]) used[k++] = used[i];
    nused = k;
    entries = nused <= SMALL ? entries_small : PyMem_Malloc(sizeof(PyObject *) * nused);
    if (entries == NULL) {
        PyErr_NoMemory();
        goto exit;
    }
    memset(entries, 0, sizeof(PyObject *) * (nused <= SMALL ? SMALL : nused));
    size = 12 + 1 + (nused ? nused - 1 : 0) + view.len;
    for (i = 0; i < nused; i++) {
        PyObject *entry = entry_of(labels, values, by_code, used[i]);
        if (entry == NULL) goto exit;
        entries[i] = entry;
        if (!PyBytes_Check(entry)) {
            PyErr_SetString(PyExc_TypeError, "labels: entries are bytes");
            goto exit;
        }
        size += PyBytes_GET_SIZE(entry);
    }
    if (size - 12 - view.len > UINT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "a code table past 4 GiB");
        goto exit;
    }
    result = PyBytes_FromStringAndSize(NULL, size);
    if (result == NULL) goto exit;
    w = PyBytes_AS_STRING(result);
    {
        uint64_t a = (uint64_t)applied;
        uint32_t head = (uint32_t)(size - 12 - view.len);
        for (i = 0; i < 8; i++) *w++ = (char)(a >> (8 * i));
        for (i = 0; i < 4; i++) *w++ = (char)(head >> (8 * i));
    }
    *w++ = 'S';
    for (i = 0; i < nused; i++) {
        if (i) *w++ = '\x1e';
        memcpy(w, PyBytes_AS_STRING(entries[i]), PyBytes_GET_SIZE(entries[i]));
        w += PyBytes_GET_SIZE(entries[i]);
    }
    memcpy(w, view.buf, view.len); /* little-endian hosts only: codec.py checks */
exit:
    if (entries != NULL) {
        for (i = 0; i < nused; i++) Py_XDECREF(entries[i]);
        if (entries != entries_small) PyMem_Free(entries);
    }
    if (used != used_small) PyMem_Free(used);
    PyBuffer_Release(&view);
    return result;
}

/* What both encoders take from their arguments: the coded row positions as a fast sequence
 * (-1 with the exception set when not a sequence), and the labels' ``_values`` and
 * ``by_code`` (NULL each when the labels have none: then encode_one asks the labels). */
static int encoder_inputs(PyObject *coded, PyObject *labels, PyObject **fast, PyObject **values,
                          PyObject **by_code) {
    *fast = PySequence_Fast(coded, "coded: a sequence of row positions");
    if (*fast == NULL) return -1;
    *values = PyObject_GetAttrString(labels, "_values");
    *by_code = *values ? PyObject_GetAttrString(labels, "by_code") : NULL;
    PyErr_Clear();
    return 0;
}

static PyObject *py_encode_rows(PyObject *self, PyObject *args) {
    PyObject *rows_obj, *coded, *labels, *fast, *result;
    Py_ssize_t stride;
    long long applied;
    PyObject *values, *by_code;
    if (!PyArg_ParseTuple(args, "OOnOL", &rows_obj, &coded, &stride, &labels, &applied))
        return NULL;
    if (encoder_inputs(coded, labels, &fast, &values, &by_code) < 0) return NULL;
    result = encode_one(rows_obj, fast, stride, labels, values, by_code, applied);
    Py_XDECREF(by_code);
    Py_XDECREF(values);
    Py_DECREF(fast);
    return result;
}

/* changelog.StateChangelog.begin's loop over the changed keys: ``dirty`` maps each to its
 * rows (store.PartitionState.dirty, in the order keys were first changed: their memory is
 * then read mostly in the order it was written), each record encoded (encode_one;
 * ``fallback(rows)`` where it raises ``not_text``) and handed to
 * ``produce(topic, value, key, partition, done)`` (the producer's own produce, whose fifth
 * positional parameter is on_delivery: no Python frame per record), ``wait()`` and again
 * while its queue is full (BufferError).
 * A key that is not bytes goes as ``key_bytes(key)``; a None key is skipped (nothing to
 * compact by). Returns how many records went. */
static PyObject *py_write_keys(PyObject *self, PyObject *args) {
    PyObject *dirty, *coded, *labels, *produce, *topic, *part, *done, *wait, *fallback;
    PyObject *not_text, *key_bytes, *fast, *key, *rows, *result = NULL;
    PyObject *values, *by_code;
    Py_ssize_t stride, sent = 0, pos = 0, size;
    long long applied;
    if (!PyArg_ParseTuple(args, "O!OnOLOOOOOOOO", &PyDict_Type, &dirty, &coded, &stride,
                          &labels, &applied, &produce, &topic, &part, &done, &wait, &fallback,
                          &not_text, &key_bytes))
        return NULL;
    if (encoder_inputs(coded, labels, &fast, &values, &by_code) < 0) return NULL;
    size = PyDict_GET_SIZE(dirty);
    while (PyDict_Next(dirty, &pos, &key, &rows)) {
        PyObject *value, *kb, *r;
        PyObject *argv[5];
        if (PyDict_GET_SIZE(dirty) != size) {
            PyErr_SetString(PyExc_RuntimeError, "the changed keys changed while written");
            goto exit;
        }
        if (key == Py_None) continue;
        Py_INCREF(key);
        Py_INCREF(rows); /* Labels.__missing__ runs Python code */
        value = encode_one(rows, fast, stride, labels, values, by_code, applied);
        if (value == NULL && PyErr_ExceptionMatches(not_text)) {
            PyErr_Clear();
            value = PyObject_CallOneArg(fallback, rows);
        }
        Py_DECREF(rows);
        if (value == NULL) {
            Py_DECREF(key);
            goto exit;
        }
        if (PyBytes_CheckExact(key)) {
            kb = key;
            Py_INCREF(kb);
        } else
            kb = PyObject_CallOneArg(key_bytes, key);
        Py_DECREF(key);
        if (kb == NULL) {
            Py_DECREF(value);
            goto exit;
        }
        argv[0] = topic;
        argv[1] = value;
        argv[2] = kb;
        argv[3] = part;
        argv[4] = done;
        while ((r = PyObject_Vectorcall(produce, argv, 5, NULL)) == NULL &&
               PyErr_ExceptionMatches(PyExc_BufferError)) {
            PyObject *w;
            PyErr_Clear();
            if ((w = PyObject_CallNoArgs(wait)) == NULL) break;
            Py_DECREF(w);
        }
        Py_DECREF(value);
        Py_DECREF(kb);
        if (r == NULL) goto exit;
        Py_DECREF(r);
        sent++;
    }
    if (!PyErr_Occurred()) result = PyLong_FromSsize_t(sent);
exit:
    Py_XDECREF(by_code);
    Py_XDECREF(values);
    Py_DECREF(fast);
    return result;
}

/* ------------------------------------------------------------------ acks */

/* changelog.Snapshot's count of delivery reports, as a C callable: the producer calls it once
 * per record on the delivery thread (no Python frame each time). Acks(on_all): called as
 * on_delivery(err, msg) it keeps the first error's text and counts; seal(records) says how
 * many there are; on_all() is called once the count reaches them after the seal (it may be
 * called twice, as Snapshot's Event.set may). The GIL orders the calls. */
typedef struct {
    PyObject_HEAD
    Py_ssize_t acked, records;
    int sealed;
    PyObject *error;
    PyObject *on_all;
} Acks;

static int acks_init(Acks *self, PyObject *args, PyObject *kwds) {
    PyObject *on_all;
    if (!PyArg_ParseTuple(args, "O:Acks", &on_all)) return -1;
    Py_INCREF(on_all);
    Py_XSETREF(self->on_all, on_all);
    return 0;
}

static void acks_dealloc(Acks *self) {
    Py_XDECREF(self->error);
    Py_XDECREF(self->on_all);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int acks_complete(Acks *self) {
    PyObject *r;
    if (!self->sealed || self->acked < self->records || self->on_all == NULL) return 0;
    r = PyObject_CallNoArgs(self->on_all);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

static PyObject *acks_call(Acks *self, PyObject *args, PyObject *kwds) {
    PyObject *err, *msg;
    if (!PyArg_ParseTuple(args, "OO", &err, &msg)) return NULL;
    if (err != Py_None && self->error == NULL) {
        self->error = PyObject_Str(err);
        if (self->error == NULL) return NULL;
    }
    self->acked++;
    if (acks_complete(self) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *acks_seal(Acks *self, PyObject *arg) {
    Py_ssize_t records = PyLong_AsSsize_t(arg);
    if (records == -1 && PyErr_Occurred()) return NULL;
    self->records = records;
    self->sealed = 1;
    if (acks_complete(self) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *acks_get_error(Acks *self, void *closure) {
    PyObject *e = self->error ? self->error : Py_None;
    Py_INCREF(e);
    return e;
}

static PyObject *acks_get_acked(Acks *self, void *closure) {
    return PyLong_FromSsize_t(self->acked);
}

static PyMethodDef acks_methods[] = {
    {"seal", (PyCFunction)acks_seal, METH_O, "No more records than this many."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef acks_getset[] = {
    {"error", (getter)acks_get_error, NULL, "The first failed delivery's error, or None.", NULL},
    {"acked", (getter)acks_get_acked, NULL, "Delivery reports so far.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject AcksType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "streaming.state._state_c.Acks",
    .tp_basicsize = sizeof(Acks),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Delivery reports of one changelog snapshot, counted.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)acks_init,
    .tp_dealloc = (destructor)acks_dealloc,
    .tp_call = (ternaryfunc)acks_call,
    .tp_methods = acks_methods,
    .tp_getset = acks_getset,
};

/* ------------------------------------------------------------------ module */

/* The declared struct against a real array('d'): ImportError on any difference. */
static int check_layout(void) {
    PyObject *a = PyObject_CallFunction(ArrayType, "s[ddd]", "d", 1.5, 2.5, 3.5);
    ArrayObject *arr = (ArrayObject *)a;
    Py_buffer view;
    int ok;
    if (a == NULL) return -1;
    if (PyObject_GetBuffer(a, &view, PyBUF_SIMPLE) < 0) {
        Py_DECREF(a);
        return -1;
    }
    DescrD = arr->ob_descr;
    ok = Py_SIZE(arr) == 3 && arr->ob_item == view.buf && arr->allocated >= 3 &&
         arr->weakreflist == NULL &&
         arr->ob_descr->typecode == 'd' && arr->ob_descr->itemsize == 8 &&
         arr->ob_exports == 1 && ((double *)view.buf)[2] == 3.5;
    PyBuffer_Release(&view);
    ok = ok && arr->ob_exports == 0;
    Py_DECREF(a);
    if (!ok) {
        PyErr_SetString(PyExc_ImportError, "array('d') is laid out otherwise here");
        return -1;
    }
    return 0;
}

static PyMethodDef methods[] = {
    {"apply", py_apply, METH_VARARGS, "One partition run of events: features, then state."},
    {"apply_rows", py_apply_rows, METH_VARARGS, "apply over a batch gather made."},
    {"gather", py_gather, METH_VARARGS, "A poll batch's keys, partition runs and rows."},
    {"encode_rows", py_encode_rows, METH_VARARGS, "codec.encode_rows, plain-text tables."},
    {"expired", py_expired, METH_VARARGS, "The keys an expiry pass drops."},
    {"code", py_code, METH_VARARGS, "A column coded in a store.Vocabulary."},
    {"live_codes", py_live_codes, METH_VARARGS, "The vocabulary codes some key's rows hold."},
    {"recode", py_recode, METH_VARARGS, "Rows' codes mapped to a pruned vocabulary's."},
    {"write_keys", py_write_keys, METH_VARARGS, "The changed keys' records, produced."},
    {"fsum", py_fsum, METH_O, "math.fsum over a sequence of floats (for the tests)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_state_c", NULL, -1, methods};

PyMODINIT_FUNC PyInit__state_c(void) {
    PyObject *m, *array_mod;
    array_mod = PyImport_ImportModule("array");
    if (array_mod == NULL) return NULL;
    ArrayType = PyObject_GetAttrString(array_mod, "array");
    Py_DECREF(array_mod);
    if (ArrayType == NULL) return NULL;
    if (check_layout() < 0) return NULL;
    str_offset = PyUnicode_InternFromString("offset");
    str_key = PyUnicode_InternFromString("key");
    str_partition = PyUnicode_InternFromString("partition");
    str_getattribute = PyUnicode_InternFromString("__getattribute__");
    if (str_offset == NULL || str_key == NULL || str_partition == NULL || str_getattribute == NULL)
        return NULL;
    object_getattribute = _PyType_Lookup(&PyBaseObject_Type, str_getattribute); /* immortal */
    if (object_getattribute == NULL) return NULL;
    Py_INCREF(object_getattribute);
    if (PyType_Ready(&AcksType) < 0) return NULL;
    m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&AcksType);
    if (PyModule_AddObject(m, "Acks", (PyObject *)&AcksType) < 0) return NULL;
    Unsupported = PyErr_NewException("streaming.state._state_c.Unsupported", NULL, NULL);
    if (Unsupported == NULL || PyModule_AddObject(m, "Unsupported", Unsupported) < 0) return NULL;
    Py_INCREF(Unsupported);
    if (PyModule_AddIntConstant(m, "COUNT", KIND_COUNT) < 0 ||
        PyModule_AddIntConstant(m, "SINCE_LAST", KIND_SINCE_LAST) < 0 ||
        PyModule_AddIntConstant(m, "SUM", KIND_SUM) < 0 ||
        PyModule_AddIntConstant(m, "MEAN", KIND_MEAN) < 0 ||
        PyModule_AddIntConstant(m, "DISTINCT", KIND_DISTINCT) < 0 ||
        PyModule_AddIntConstant(m, "MAX", KIND_MAX) < 0 ||
        PyModule_AddIntConstant(m, "LAST", KIND_LAST) < 0)
        return NULL;
    return m;
}
