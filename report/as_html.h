/* as_html: a growable text buffer and the HTML pieces the report is made of (escaping, tables,
 * figures). Presentation only: no analysis here, no dependency beyond libc.
 *
 * Errors are sticky: once an allocation fails, the buffer is marked (oom) and every later
 * append is a no-op, so callers build a whole document and check once at the end. */
#ifndef AS_HTML_H
#define AS_HTML_H

#include <stddef.h>

typedef struct {
    char *data; /* NUL-terminated while len > 0 */
    size_t len, cap;
    int oom;
} as_buf;

void as_buf_init(as_buf *b);
void as_buf_free(as_buf *b);
/* Hand over the text (caller frees) and reset b; NULL if an allocation failed. */
char *as_buf_take(as_buf *b, size_t *len);

void as_buf_putn(as_buf *b, const char *s, size_t n);
void as_buf_puts(as_buf *b, const char *s);
void as_buf_printf(as_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append s with &, <, >, ", ' escaped (text and attribute values). NULL appends nothing. */
void as_buf_esc(as_buf *b, const char *s);
/* Append a number as text: "%.*g" with sig significant digits, "n/a" for NaN, "inf" for Inf. */
void as_buf_num(as_buf *b, double v, int sig);

/* ---- HTML fragments ---------------------------------------------------------------------- */
/* Start the document: <!DOCTYPE html>, <head> with the title and the report's inline CSS. */
void as_html_begin(as_buf *b, const char *title);
/* The same with rules of a page's own after the common ones (trusted CSS, NULL: none). */
void as_html_begin_css(as_buf *b, const char *title, const char *extra_css);
void as_html_end(as_buf *b);
/* <section id=ID><h2>TITLE</h2> + optional intro paragraph (escaped text). */
void as_html_section(as_buf *b, const char *id, const char *title, const char *intro);
void as_html_section_end(as_buf *b);
/* A note saying why a section has no data (escaped text), styled as a muted box. */
void as_html_note(as_buf *b, const char *text);
/* <figure> holding an inline SVG (trusted markup from as_plot) and an escaped caption.
 * id names the figure (data-plot attribute) so tests can find it. */
void as_html_figure(as_buf *b, const char *id, const char *svg, const char *caption);
/* Open/close a grid of figures laid out side by side (columns: 1..4). */
void as_html_grid_begin(as_buf *b, int columns);
void as_html_grid_end(as_buf *b);

/* A two-column key/value table: begin, rows (escaped text; value NULL shows "n/a"), end.
 * as_html_kv_code shows the value in a monospace font (paths, checksums, commands). */
void as_html_kv_begin(as_buf *b, const char *cls);
void as_html_kv(as_buf *b, const char *key, const char *value);
void as_html_kv_code(as_buf *b, const char *key, const char *value);
void as_html_kv_end(as_buf *b);

#endif
