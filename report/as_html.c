/* as_html: growable buffer, escaping, and the report's HTML fragments. */
#include "as_html.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void as_buf_init(as_buf *b) { memset(b, 0, sizeof *b); }

void as_buf_free(as_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

char *as_buf_take(as_buf *b, size_t *len)
{
    char *d = b->oom ? NULL : b->data;
    if (len) *len = d ? b->len : 0;
    if (b->oom) free(b->data);
    if (!b->oom && !d) d = calloc(1, 1);
    memset(b, 0, sizeof *b);
    return d;
}

static int reserve(as_buf *b, size_t extra)
{
    if (b->oom) return 0;
    if (b->len + extra + 1 <= b->cap) return 1;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra + 1) {
        if (cap > ((size_t)-1) / 2) {
            b->oom = 1;
            return 0;
        }
        cap *= 2;
    }
    char *d = realloc(b->data, cap);
    if (!d) {
        b->oom = 1;
        return 0;
    }
    b->data = d;
    b->cap = cap;
    return 1;
}

void as_buf_putn(as_buf *b, const char *s, size_t n)
{
    if (!s || !reserve(b, n)) return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void as_buf_puts(as_buf *b, const char *s)
{
    if (s) as_buf_putn(b, s, strlen(s));
}

void as_buf_printf(as_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = 1;
    } else if (reserve(b, (size_t)n)) {
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
        b->len += (size_t)n;
    }
    va_end(ap2);
}

void as_buf_esc(as_buf *b, const char *s)
{
    if (!s) return;
    const char *run = s;
    for (const char *p = s; *p; p++) {
        const char *rep = NULL;
        switch (*p) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '"': rep = "&quot;"; break;
        case '\'': rep = "&#39;"; break;
        default: break;
        }
        if (rep) {
            as_buf_putn(b, run, (size_t)(p - run));
            as_buf_puts(b, rep);
            run = p + 1;
        }
    }
    as_buf_puts(b, run);
}

void as_buf_num(as_buf *b, double v, int sig)
{
    if (isnan(v))
        as_buf_puts(b, "n/a");
    else if (isinf(v))
        as_buf_puts(b, v > 0 ? "inf" : "-inf");
    else
        as_buf_printf(b, "%.*g", sig, v);
}

/* ---------------------------------------------------------------- document */
static const char css[] =
    ":root{--fg:#1b1b1b;--muted:#5f6368;--line:#d9dce1;--accent:#0072B2;--bg2:#f5f7fa}"
    "*{box-sizing:border-box}"
    "body{margin:0;font:15px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',"
    "sans-serif;color:var(--fg);background:#fff}"
    "main{max-width:1320px;margin:0 auto;padding:24px 32px 64px}"
    "header{border-bottom:3px solid var(--accent);margin-bottom:8px;padding-bottom:12px}"
    "h1{font-size:26px;margin:0 0 4px}"
    "h2{font-size:20px;margin:36px 0 6px;padding-bottom:4px;border-bottom:1px solid var(--line)}"
    "h3{font-size:16px;margin:18px 0 6px}"
    ".sub{color:var(--muted);margin:0}"
    "nav{font-size:13px;margin:10px 0 0}nav a{margin-right:14px;color:var(--accent);"
    "text-decoration:none}"
    "p.intro{max-width:960px;color:#333;margin:4px 0 12px}"
    ".grid{display:grid;gap:18px 24px;align-items:start}"
    ".g1{grid-template-columns:1fr}.g2{grid-template-columns:repeat(2,minmax(0,1fr))}"
    ".g3{grid-template-columns:repeat(3,minmax(0,1fr))}"
    ".g4{grid-template-columns:repeat(4,minmax(0,1fr))}"
    "figure{margin:0}figure svg{width:100%;height:auto;display:block}"
    "figcaption{font-size:13px;color:var(--muted);margin-top:4px}"
    "table{border-collapse:collapse;font-size:13.5px;margin:6px 0 12px}"
    "th,td{padding:4px 10px;border-bottom:1px solid var(--line);text-align:right;"
    "vertical-align:top;white-space:nowrap}"
    "th{background:var(--bg2);font-weight:600;white-space:normal}"
    "td.l,th.l{text-align:left}th.c{text-align:center}th.nw{white-space:nowrap}"
    "table.kv td:first-child{text-align:left;color:var(--muted);white-space:nowrap}"
    "table.kv td{text-align:left;white-space:normal}"
    "code,.mono{font-family:ui-monospace,'DejaVu Sans Mono',Menlo,monospace;font-size:12.5px;"
    "word-break:break-all}"
    ".note{background:var(--bg2);border-left:4px solid #999;padding:8px 12px;color:var(--muted);"
    "margin:8px 0}"
    ".cards{display:flex;flex-wrap:wrap;gap:12px;margin:14px 0}"
    ".card{border:1px solid var(--line);border-radius:6px;padding:8px 14px;min-width:180px}"
    ".card b{display:block;font-size:22px;color:var(--accent)}"
    ".card span{font-size:12.5px;color:var(--muted)}"
    "details summary{cursor:pointer;color:var(--accent)}"
    "footer{margin-top:40px;font-size:12px;color:var(--muted)}";

void as_html_begin(as_buf *b, const char *title) { as_html_begin_css(b, title, NULL); }

void as_html_begin_css(as_buf *b, const char *title, const char *extra_css)
{
    as_buf_puts(b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                   "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                   "<meta name=\"generator\" content=\"attnscope " AS_VERSION "\">\n<title>");
    as_buf_esc(b, title);
    as_buf_puts(b, "</title>\n<style>");
    as_buf_puts(b, css);
    as_buf_puts(b, extra_css); /* NULL: nothing */
    as_buf_puts(b, "</style>\n</head>\n<body>\n<main>\n");
}

void as_html_end(as_buf *b) { as_buf_puts(b, "</main>\n</body>\n</html>\n"); }

void as_html_section(as_buf *b, const char *id, const char *title, const char *intro)
{
    as_buf_puts(b, "<section id=\"");
    as_buf_esc(b, id);
    as_buf_puts(b, "\">\n<h2>");
    as_buf_esc(b, title);
    as_buf_puts(b, "</h2>\n");
    if (intro) {
        as_buf_puts(b, "<p class=\"intro\">");
        as_buf_esc(b, intro);
        as_buf_puts(b, "</p>\n");
    }
}

void as_html_section_end(as_buf *b) { as_buf_puts(b, "</section>\n"); }

void as_html_note(as_buf *b, const char *text)
{
    as_buf_puts(b, "<div class=\"note\">");
    as_buf_esc(b, text);
    as_buf_puts(b, "</div>\n");
}

void as_html_figure(as_buf *b, const char *id, const char *svg, const char *caption)
{
    as_buf_puts(b, "<figure data-plot=\"");
    as_buf_esc(b, id);
    as_buf_puts(b, "\">\n");
    as_buf_puts(b, svg);
    if (caption) {
        as_buf_puts(b, "<figcaption>");
        as_buf_esc(b, caption);
        as_buf_puts(b, "</figcaption>\n");
    }
    as_buf_puts(b, "</figure>\n");
}

void as_html_grid_begin(as_buf *b, int columns)
{
    if (columns < 1) columns = 1;
    if (columns > 4) columns = 4;
    as_buf_printf(b, "<div class=\"grid g%d\">\n", columns);
}

void as_html_grid_end(as_buf *b) { as_buf_puts(b, "</div>\n"); }

void as_html_kv_begin(as_buf *b, const char *cls)
{
    as_buf_puts(b, "<table class=\"kv");
    if (cls) {
        as_buf_puts(b, " ");
        as_buf_esc(b, cls);
    }
    as_buf_puts(b, "\">\n");
}

static void kv_row(as_buf *b, const char *key, const char *value, int code)
{
    as_buf_puts(b, "<tr><td>");
    as_buf_esc(b, key);
    as_buf_puts(b, code ? "</td><td><code>" : "</td><td>");
    as_buf_esc(b, value ? value : "n/a");
    as_buf_puts(b, code ? "</code></td></tr>\n" : "</td></tr>\n");
}

void as_html_kv(as_buf *b, const char *key, const char *value) { kv_row(b, key, value, 0); }
void as_html_kv_code(as_buf *b, const char *key, const char *value) { kv_row(b, key, value, 1); }
void as_html_kv_end(as_buf *b) { as_buf_puts(b, "</table>\n"); }
