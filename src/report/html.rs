//! HTML: one self-contained page (inline CSS, an inline SVG chart, one tiny inline sort script,
//! no external requests), readable offline and printed.
//!
//! Markup comes from `maud`: every `(value)` in a template is HTML-escaped, text and attributes
//! alike, and only our own constant CSS and script are emitted unescaped (`PreEscaped`). Table
//! cells, the hot path, implement maud's `Render` and put every string through its `Escaper`;
//! the only unescaped values there are digits we formatted. No data
//! ever goes into a script or style context. A Content-Security-Policy allows only that one script
//! (by its SHA-256), so even a markup bug could not run a script from the data. Rows are rendered
//! one by one into a temporary spool file so the summary can sit above the table with flat memory.

use std::io::{BufWriter, Seek, Write};

use base64::Engine;
use std::fmt::Write as _;

use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::{OffsetName, Tz};
use maud::{html, Escaper, Markup, PreEscaped, Render, DOCTYPE};
use sha2::{Digest, Sha256};

use super::{Cell, Chart, Meta, ReportError, ReportKind, Sink, Summary};
use crate::export::push_rfc3339;

pub(super) struct HtmlSink<'a> {
    out: &'a mut dyn Write,
    spool: BufWriter<std::fs::File>,
    tz: Tz,
    types: Vec<&'static str>,
    privileged_col: Option<usize>,
    rows: u64,
    /// Reused for every row.
    row_buf: String,
}

impl<'a> HtmlSink<'a> {
    pub(super) fn new(out: &'a mut dyn Write, tz: Tz) -> Result<HtmlSink<'a>, ReportError> {
        Ok(HtmlSink {
            out,
            spool: BufWriter::new(tempfile::tempfile()?),
            tz,
            types: Vec::new(),
            privileged_col: None,
            rows: 0,
            row_buf: String::with_capacity(4096),
        })
    }
}

pub(crate) const CSS: &str = r#"
:root{--ink:#1d2433;--muted:#5b6478;--line:#dfe3ea;--bg:#f6f7f9;--card:#fff;--accent:#2f5fd0;--warn:#b4232a;--warnbg:#fdecec;--okbg:#e9f6ee;--ok:#1f7a45}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif;color:var(--ink);background:var(--bg)}
main{max-width:1400px;margin:0 auto;padding:24px 28px 40px}
header h1{margin:0 0 4px;font-size:26px}
header .sub{color:var(--muted);margin:0 0 16px}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:0 0 18px}
dl.facts dt{color:var(--muted)}dl.facts dd{margin:0}
.coverage{border-radius:8px;padding:10px 14px;margin:0 0 18px;border:1px solid}
.coverage.ok{background:var(--okbg);border-color:#b9e2c8;color:var(--ok)}
.coverage.bad{background:var(--warnbg);border-color:#f3b9bc;color:var(--warn)}
.coverage strong{display:block;margin-bottom:2px}
.coverage ul{margin:4px 0 0;padding-left:18px;color:var(--ink)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:12px;margin:0 0 18px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 14px}
.card .v{font-size:28px;font-weight:650}
.card .l{color:var(--muted);font-size:12.5px}
.card.warn{border-color:#f3b9bc}.card.warn .v{color:var(--warn)}
.chart{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 14px;margin:0 0 18px}
.chart h2,.notes h2,.rows-h{font-size:15px;margin:0 0 8px}
.chart svg{width:100%;height:auto;max-height:200px}
.chart rect.bar{fill:var(--accent)}
.chart text{font-size:10px;fill:var(--muted)}
.notes{color:var(--muted);margin:0 0 18px}.notes ul{margin:0;padding-left:18px}
.empty{background:var(--card);border:1px dashed var(--line);border-radius:10px;padding:28px;text-align:center;font-size:16px;color:var(--muted)}
.tablewrap{overflow-x:auto;background:var(--card);border:1px solid var(--line);border-radius:10px}
table{border-collapse:collapse;width:100%}
th,td{padding:6px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top;unicode-bidi:isolate;white-space:pre-wrap;overflow-wrap:break-word}
th{position:sticky;top:0;background:#eef1f6;font-weight:600;white-space:nowrap}
th button{all:unset;cursor:pointer}
th button::after{content:" \2195";color:var(--muted)}
th[aria-sort=ascending] button::after{content:" \2191"}
th[aria-sort=descending] button::after{content:" \2193"}
tbody tr:nth-child(even){background:#fafbfc}
tr.priv td:first-child{box-shadow:inset 3px 0 0 var(--warn)}
td.t{white-space:nowrap;font-variant-numeric:tabular-nums}
td.t .local{color:var(--muted);font-size:12px}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.chip{display:inline-block;background:#eef1f6;border-radius:4px;padding:0 5px;margin:0 3px 2px 0;font-size:12px}
.yes{color:var(--warn);font-weight:600}
.null{color:#a0a7b5}
footer{color:var(--muted);margin-top:18px;font-size:12px}
@media print{body{background:#fff}main{padding:0}th{position:static}th button::after{content:""}.card,.chart,.tablewrap{break-inside:avoid}thead{display:table-header-group}}
"#;

/// Sorts the table by a clicked column; marks the page so tests can tell scripts ran at all.
/// It reads only the DOM; no data is ever placed in a script.
const SCRIPT: &str = r#"(function(){
document.documentElement.setAttribute("data-sort-ready","1");
var t=document.querySelector("table.rows");if(!t)return;
var ths=t.tHead.rows[0].cells;
function num(s){var v=parseFloat(s);return isNaN(v)?-Infinity:v;}
Array.prototype.forEach.call(ths,function(th,i){
var b=th.querySelector("button");if(!b)return;
b.addEventListener("click",function(){
var asc=th.getAttribute("aria-sort")!=="ascending";
Array.prototype.forEach.call(ths,function(o){o.removeAttribute("aria-sort");});
th.setAttribute("aria-sort",asc?"ascending":"descending");
var numeric=th.getAttribute("data-type")!=="text"&&th.getAttribute("data-type")!=="list";
var body=t.tBodies[0];var rows=Array.prototype.slice.call(body.rows);
rows.sort(function(a,c){
var x=a.cells[i],y=c.cells[i];
var p=x.getAttribute("data-v"),q=y.getAttribute("data-v");
if(p===null)p=x.textContent;if(q===null)q=y.textContent;
var r=numeric?(num(p)<num(q)?-1:num(p)>num(q)?1:0):p.localeCompare(q);
return asc?r:-r;});
rows.forEach(function(r){body.appendChild(r);});
});});
})();"#;

fn csp() -> String {
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(SCRIPT.as_bytes()));
    format!(
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'sha256-{hash}'; base-uri 'none'; form-action 'none'"
    )
}

fn at(ms: i64) -> DateTime<Utc> {
    super::at(ms)
}

/// One table cell, rendered straight into the row buffer (no per-cell allocation): text goes
/// through maud's escaper; times and numbers are digits we format ourselves.
struct CellView<'a> {
    cell: &'a Cell,
    ty: &'a str,
    tz: Tz,
}

fn ymd_hms(buf: &mut String, t: &impl Datelike2) {
    let year = t.year();
    if !(0..=9999).contains(&year) {
        let _ = write!(
            buf,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            year,
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        );
        return;
    }
    // Digits written directly: a report formats two of these per time cell.
    let mut out = *b"0000-00-00 00:00:00";
    let mut put = |at: usize, mut v: u32| {
        for i in (at..at + if at == 0 { 4 } else { 2 }).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year.unsigned_abs());
    put(5, t.month());
    put(8, t.day());
    put(11, t.hour());
    put(14, t.minute());
    put(17, t.second());
    buf.extend(out.iter().map(|&b| char::from(b)));
}

/// The date and time fields both a UTC and a zoned time have.
trait Datelike2: Datelike + Timelike {}
impl<T: Datelike + Timelike> Datelike2 for T {}

impl Render for CellView<'_> {
    fn render_to(&self, buf: &mut String) {
        match self.cell {
            Cell::Null => buf.push_str("<td class=\"null\" data-v=\"\">–</td>"),
            Cell::Text(s) => {
                buf.push_str("<td>");
                let _ = Escaper::new(buf).write_str(s);
                buf.push_str("</td>");
            }
            Cell::Time(ms) => {
                let t = at(*ms);
                let local = t.with_timezone(&self.tz);
                let _ = write!(buf, "<td class=\"t\" data-v=\"{ms}\"><time datetime=\"");
                push_rfc3339(buf, t);
                buf.push_str("\">");
                ymd_hms(buf, &t);
                buf.push_str(" UTC</time><br><span class=\"local\">");
                ymd_hms(buf, &local);
                buf.push(' ');
                match local.offset().abbreviation() {
                    Some(name) => {
                        let _ = Escaper::new(buf).write_str(name);
                    }
                    None => {
                        let _ = write!(buf, "{}", local.format("%:z"));
                    }
                }
                buf.push_str("</span></td>");
            }
            Cell::Int(v) => {
                let _ = write!(buf, "<td class=\"n\" data-v=\"{v}\">{v}</td>");
            }
            Cell::Bool(b) => {
                let _ = write!(buf, "<td data-v=\"{}\">", u8::from(*b));
                buf.push_str(if *b && self.ty == "bool" {
                    "<span class=\"yes\">yes</span></td>"
                } else {
                    "no</td>"
                });
            }
            Cell::List(v) => {
                buf.push_str("<td>");
                for r in v {
                    buf.push_str("<span class=\"chip\">");
                    let _ = Escaper::new(buf).write_str(r);
                    buf.push_str("</span>");
                }
                buf.push_str("</td>");
            }
        }
    }
}

fn chart(c: &Chart) -> Markup {
    let n = c.bars.len().max(1) as f64;
    let (w, h, pad_b, pad_t) = (720.0_f64, 150.0_f64, 22.0_f64, 14.0_f64);
    let max = c.bars.iter().map(|(_, v)| *v).max().unwrap_or(0).max(1) as f64;
    let slot = w / n;
    let bw = (slot * 0.78).max(1.0);
    // Label at most ~8 bars so the axis stays legible.
    let every = (c.bars.len() / 8).max(1);
    html! {
        section.chart {
            h2 { (c.title) }
            svg xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {w} {h}")) role="img" aria-label=(c.title) {
                line x1="0" x2=(w) y1=(h - pad_b) y2=(h - pad_b) stroke="#dfe3ea" {}
                @for (i, (label, v)) in c.bars.iter().enumerate() {
                    @let bh = (*v as f64 / max) * (h - pad_b - pad_t);
                    @let x = i as f64 * slot + (slot - bw) / 2.0;
                    rect.bar x=(format!("{x:.1}")) y=(format!("{:.1}", h - pad_b - bh)) width=(format!("{bw:.1}")) height=(format!("{bh:.1}")) rx="1.5" {
                        title { (label) ": " (v) }
                    }
                    @if *v > 0 && c.bars.len() <= 40 {
                        text x=(format!("{:.1}", x + bw / 2.0)) y=(format!("{:.1}", h - pad_b - bh - 3.0)) text-anchor="middle" { (v) }
                    }
                    @if i % every == 0 || i + 1 == c.bars.len() {
                        text x=(format!("{:.1}", x + bw / 2.0)) y=(format!("{:.1}", h - 6.0)) text-anchor="middle" { (label) }
                    }
                }
            }
        }
    }
}

impl Sink for HtmlSink<'_> {
    fn begin(&mut self, meta: &Meta) -> Result<(), ReportError> {
        self.types = meta.columns.iter().map(|c| c.ty).collect();
        self.privileged_col = meta.columns.iter().position(|c| c.key == "privileged");
        Ok(())
    }

    fn row(&mut self, cells: &[Cell]) -> Result<(), ReportError> {
        let privileged = self
            .privileged_col
            .and_then(|i| cells.get(i))
            .is_some_and(|c| *c == Cell::Bool(true));
        let buf = &mut self.row_buf;
        buf.clear();
        buf.push_str(if privileged {
            "<tr class=\"priv\">"
        } else {
            "<tr>"
        });
        for (i, c) in cells.iter().enumerate() {
            CellView {
                cell: c,
                ty: self.types.get(i).copied().unwrap_or("text"),
                tz: self.tz,
            }
            .render_to(buf);
        }
        buf.push_str("</tr>\n");
        self.spool.write_all(buf.as_bytes())?;
        self.rows += 1;
        Ok(())
    }

    fn finish(&mut self, meta: &Meta, summary: &Summary) -> Result<(), ReportError> {
        let kind = ReportKind::from_name(meta.kind);
        let title = format!("{} — auditwarden", meta.title);
        let head = html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta http-equiv="Content-Security-Policy" content=(csp());
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    meta name="generator" content=(meta.generator);
                    title { (title) }
                    style { (PreEscaped(CSS)) }
                }
                body {
                    (PreEscaped("<main>"))
                    header {
                        h1 { (meta.title) }
                        p.sub { "auditwarden compliance report · " (meta.period.description) }
                        dl.facts {
                            dt { "Period" } dd { (meta.period.description) }
                            dt { "Covers" } dd.scope { (meta.scope) }
                            dt { "Generated" } dd { (meta.generated_at) }
                            dt { "Generator" } dd { (meta.generator) }
                            dt { "Time zone" } dd { "UTC, and " (meta.display_time_zone) " (labelled)" }
                            dt { "Accounts" } dd {
                                @for (i, a) in meta.accounts.iter().enumerate() {
                                    @if i > 0 { ", " }
                                    (a.account) " (" (a.kind) ")"
                                }
                            }
                        }
                    }
                    section class=(if meta.complete { "coverage ok" } else { "coverage bad" }) {
                        @if meta.complete {
                            strong { "Collected data is complete for this report." }
                        } @else {
                            strong { "WARNING: the collected data is incomplete; this report may miss events." }
                        }
                        ul { @for a in &meta.accounts { li { (a.account) ": " (a.statement) } } }
                    }
                    section.cards {
                        @for c in &summary.cards {
                            div class=(if c.tone == "warn" { "card warn" } else { "card" }) {
                                div.v { (c.value) }
                                div.l { (c.label) }
                            }
                        }
                    }
                    @if let Some(c) = &summary.chart { @if self.rows > 0 { (chart(c)) } }
                    section.notes {
                        h2 { "How to read this report" }
                        ul { @for n in &meta.notes { li { (n) } } }
                    }
                    @if self.rows == 0 {
                        p.empty { (kind.map_or("No rows.", |k| k.empty_text())) }
                    }
                    (PreEscaped(if self.rows > 0 { "<div class=\"tablewrap\"><table class=\"rows\">" } else { "" }))
                    @if self.rows > 0 {
                        thead { tr {
                            @for c in &meta.columns {
                                th scope="col" data-type=(c.ty) { button type="button" { (c.label) } }
                            }
                        } }
                        (PreEscaped("<tbody>"))
                    }
                }
            }
        };
        // The page up to the open <tbody>: cut maud's closing tags, the rows and the end follow.
        let text = head.into_string();
        let cut = text.rfind("</body>").unwrap_or(text.len());
        self.out.write_all(&text.as_bytes()[..cut])?;
        self.spool.flush()?;
        let file = self.spool.get_mut();
        file.rewind()?;
        std::io::copy(file, &mut self.out)?;
        if self.rows > 0 {
            self.out.write_all(b"</tbody></table></div>\n")?;
        }
        let tail = html! {
            footer {
                (self.rows) " row(s) · " (meta.generator) " · schema " (meta.schema)
                " · times in UTC with " (meta.display_time_zone) " below · click a column to sort"
            }
        };
        self.out.write_all(tail.into_string().as_bytes())?;
        self.out.write_all(b"</main>\n<script>")?;
        self.out.write_all(SCRIPT.as_bytes())?;
        self.out.write_all(b"</script>\n</body></html>\n")?;
        self.out.flush()?;
        Ok(())
    }
}
