"""`rdo eval human export` / `tally`: blind A/B sheets for annotators, and what they decided (paper section 4.4, Table 6).

- export: the matched examples of two generations files (a fixed sample by seed) in a shuffled order,
  each with a coin flip for which system is Response 1. The folder sent to annotators holds
  `sheet.csv` (fill the `choice` column with 1, 2 or tie) and `sheet.html` (a self-contained page:
  open it in a browser, choose, download the filled CSV; no network). The key saying which system
  is which goes to a separate file that annotators never see.
- tally: each sheet + the key -> win / tie / loss for A per annotator and by the majority of the
  annotators who answered an item (a draw is a tie), with bootstrap intervals, and Fleiss' kappa over
  the items every annotator answered.
"""

from __future__ import annotations

import csv
import html
import io
import json
import logging
import random
from pathlib import Path

import torch

from rdo.utils import atomic
from rdo.config import HumanExportConfig, HumanTallyConfig
from rdo.data.errors import DataError
from rdo.evaluate.judge_pairs import OUTCOMES, majority, matched_examples, sample_examples
from rdo.evaluate.stats import format_rate, rate_cis
from rdo.utils.fingerprint import digest, file_digest

log = logging.getLogger("rdo.eval")

SHEET_COLUMNS = ("item", "prompt", "response_1", "response_2", "choice", "annotator", "sheet_id")
CHOICES = ("1", "2", "tie")


# --- export ----------------------------------------------------------------------------------------

def human_export(cfg: HumanExportConfig) -> dict:
    examples, match = matched_examples(cfg.generations_a, cfg.generations_b)
    sample = sample_examples(examples, cfg.num_samples, cfg.seed)
    rng = random.Random(cfg.seed)
    rng.shuffle(sample)  # annotators see no order that hints at the source
    items, key_items = [], {}
    for n, ex in enumerate(sample, 1):
        a_first = rng.random() < 0.5
        item = f"item-{n:04d}"
        first, second = (ex.a, ex.b) if a_first else (ex.b, ex.a)
        items.append({"item": item, "prompt": ex.question, "response_1": first, "response_2": second})
        key_items[item] = {"key": ex.key, "response_1": "a" if a_first else "b", "row_a": ex.row_a, "row_b": ex.row_b}
    sheet_id = digest(items)[:16]  # ties a filled sheet to this export (and this key)
    out = Path(cfg.output_dir)
    atomic.write_text(out / "sheet.csv", sheet_csv(items, sheet_id))
    atomic.write_text(out / "sheet.html", sheet_html(items, sheet_id, cfg.title))
    key = {"sheet_id": sheet_id, "a": cfg.generations_a, "b": cfg.generations_b, "a_sha256": file_digest(cfg.generations_a),
           "b_sha256": file_digest(cfg.generations_b), "seed": cfg.seed, "match": match, "items": key_items}
    atomic.write_json(cfg.key, key)
    log.info("wrote %d items to %s (sheet.csv, sheet.html); the key is %s: keep it from the annotators",
             len(items), out, cfg.key)
    print(f"{len(items)} items -> {out}/sheet.csv and {out}/sheet.html; key -> {cfg.key}")
    return {"n": len(items), "sheet_id": sheet_id, "output_dir": str(out), "key": cfg.key}


def sheet_csv(items: list[dict], sheet_id: str) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SHEET_COLUMNS, lineterminator="\n")
    w.writeheader()
    for it in items:
        w.writerow({**it, "choice": "", "annotator": "", "sheet_id": sheet_id})
    return buf.getvalue()


def sheet_html(items: list[dict], sheet_id: str, title: str) -> str:
    """The page: items rendered from embedded JSON (as text, never as markup), choices kept in localStorage."""
    data = json.dumps({"sheet_id": sheet_id, "items": items}, ensure_ascii=False)
    data = data.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")  # cannot close the <script>
    return _PAGE.replace("__TITLE__", html.escape(title)).replace("__DATA__", data)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 70em; padding: 0 1em; }
.item { border: 1px solid #ccc; border-radius: 6px; padding: 1em; margin: 1.5em 0; }
.item.done { border-color: #2a7; }
.prompt, .response { white-space: pre-wrap; background: #f6f6f6; padding: .6em; border-radius: 4px; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 1em; }
.choice label { margin-right: 1.5em; }
#bar { position: sticky; top: 0; background: #fff; padding: .6em 0; border-bottom: 1px solid #ddd; }
#csv-preview { width: 100%; height: 6em; font: 12px monospace; }
</style></head>
<body>
<h1>__TITLE__</h1>
<p>For each query, read both responses and choose the better one for helpfulness and general quality,
or <b>tie</b>. The responses come from two systems in a random order. When done, press
<b>Download CSV</b> and send the file back. Your choices are kept in this browser if you close the page.</p>
<div id="bar">Annotator: <input id="annotator" placeholder="your name">
 <span id="progress"></span> <button id="download">Download CSV</button> <a id="link" hidden></a></div>
<div id="items"></div>
<details><summary>CSV that will be downloaded</summary><textarea id="csv-preview" readonly></textarea></details>
<script type="application/json" id="data">__DATA__</script>
<script>
"use strict";
const data = JSON.parse(document.getElementById("data").textContent);
const store = "rdo-human-" + data.sheet_id;
function load() { try { return JSON.parse(localStorage.getItem(store) || "{}"); } catch (e) { return {}; } }
function save(v) { try { localStorage.setItem(store, JSON.stringify(v)); } catch (e) { /* storage off: keep going */ } }
const saved = load();
const choices = saved.choices || {};
const nameBox = document.getElementById("annotator");
nameBox.value = saved.annotator || "";

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;  // text, never markup
  return e;
}
function quote(v) { v = String(v); return /[",\\n\\r]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v; }
function csvText() {
  const rows = [["item", "choice", "annotator", "sheet_id"]];
  for (const it of data.items) rows.push([it.item, choices[it.item] || "", nameBox.value, data.sheet_id]);
  return rows.map(r => r.map(quote).join(",")).join("\\n") + "\\n";
}
function update() {
  save({choices: choices, annotator: nameBox.value});
  const done = data.items.filter(it => choices[it.item]).length;
  document.getElementById("progress").textContent = done + " / " + data.items.length + " answered";
  document.getElementById("csv-preview").textContent = csvText();
  for (const it of data.items) document.getElementById(it.item).classList.toggle("done", !!choices[it.item]);
}
const list = document.getElementById("items");
for (const it of data.items) {
  const box = el("section", "item"); box.id = it.item;
  box.append(el("h2", "", it.item), el("div", "prompt", it.prompt));
  const pair = el("div", "pair");
  for (const k of ["1", "2"]) {
    const col = el("div");
    col.append(el("h3", "", "Response " + k), el("div", "response", it["response_" + k]));
    pair.append(col);
  }
  const row = el("div", "choice");
  for (const [value, label] of [["1", "Response 1 is better"], ["tie", "Tie"], ["2", "Response 2 is better"]]) {
    const lab = el("label"), input = el("input");
    input.type = "radio"; input.name = it.item; input.value = value; input.checked = choices[it.item] === value;
    input.addEventListener("change", () => { choices[it.item] = value; update(); });
    lab.append(input, " " + label);
    row.append(lab);
  }
  box.append(pair, row);
  list.append(box);
}
nameBox.addEventListener("input", update);
document.getElementById("download").addEventListener("click", () => {
  const link = document.getElementById("link");
  link.href = URL.createObjectURL(new Blob([csvText()], {type: "text/csv"}));
  link.download = "annotations-" + (nameBox.value || "anonymous").replace(/[^A-Za-z0-9_-]+/g, "_") + ".csv";
  link.click();
});
update();
</script>
</body></html>
"""


# --- tally -----------------------------------------------------------------------------------------

def fleiss_kappa(counts: list[list[int]]) -> float | None:
    """Fleiss' kappa of an items x categories table of how many raters chose each category (same raters per item).

    P_i = (sum_j n_ij^2 - n) / (n (n - 1)), p_j = sum_i n_ij / (N n), kappa = (mean P_i - sum p_j^2) / (1 - sum p_j^2).
    None when undefined: no items, fewer than 2 raters, or every rating in one category.
    """
    t = torch.tensor(counts, dtype=torch.float64)
    if t.numel() == 0 or t.shape[0] == 0:
        return None
    per_item = t.sum(dim=1)  # (N,) raters of each item
    if per_item[0] < 2:
        return None
    if not torch.all(per_item == per_item[0]):
        raise ValueError("Fleiss' kappa needs the same number of ratings for every item")
    n = float(per_item[0])
    p_i = ((t**2).sum(dim=1) - n) / (n * (n - 1))  # (N,)
    p_j = t.sum(dim=0) / t.sum()  # (C,)
    p_e = float((p_j**2).sum())
    if p_e >= 1.0:
        return None
    return (float(p_i.mean()) - p_e) / (1 - p_e)


def read_sheet(path: str, key: dict) -> tuple[str | None, dict[str, str], int]:
    """(annotator name or None, {item: win/tie/loss}, unanswered count) from one filled sheet."""
    items = key["items"]
    text = Path(path).read_text(encoding="utf-8-sig")  # a spreadsheet's byte-order mark is not a column name
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in ("item", "choice") if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"{path}: no column(s) {missing}; expected the sheet written by `rdo eval human export` "
                         "or the CSV its page downloads")
    outcomes, unanswered, name = {}, 0, None
    for rec in reader:
        line = reader.line_num
        item = (rec.get("item") or "").strip()
        if item not in items:
            raise DataError(path, line, "item", f"{item!r} is not in the key: is this sheet from another export?")
        if (sid := (rec.get("sheet_id") or "").strip()) and sid != key["sheet_id"]:
            raise DataError(path, line, "sheet_id", f"{sid!r} but the key is for sheet {key['sheet_id']!r}: use the key of this export")
        if item in outcomes:
            raise DataError(path, line, "item", f"{item!r} appears twice in this sheet")
        choice = (rec.get("choice") or "").strip().lower()
        if not choice:
            unanswered += 1
            continue
        if choice not in CHOICES:
            raise DataError(path, line, "choice", f"{rec['choice']!r}: expected 1, 2 or tie")
        if choice == "tie":
            outcomes[item] = "tie"
        else:
            a_chosen = (choice == "1") == (items[item]["response_1"] == "a")
            outcomes[item] = "win" if a_chosen else "loss"
        name = name or (rec.get("annotator") or "").strip() or None
    return name, outcomes, unanswered


def human_tally(cfg: HumanTallyConfig) -> dict:
    key = json.loads(Path(cfg.key).read_text(encoding="utf-8"))
    if not isinstance(key, dict) or "items" not in key or "sheet_id" not in key:
        raise ValueError(f"{cfg.key}: not a key written by `rdo eval human export`")
    annotators, seen = [], set()
    for path in cfg.sheets:
        name, outcomes, unanswered = read_sheet(path, key)
        name = name or Path(path).stem
        while name in seen:  # two sheets signed alike stay two annotators
            name += "'"
        seen.add(name)
        annotators.append((name, path, outcomes, unanswered))

    result = {"key": cfg.key, "sheet_id": key["sheet_id"], "a": key.get("a"), "b": key.get("b"), "items": len(key["items"]),
              "annotators": []}
    for name, path, outcomes, unanswered in annotators:
        given = list(outcomes.values())
        result["annotators"].append({"name": name, "sheet": path, "n": len(given), "unanswered": unanswered,
                                     **rate_cis(given, OUTCOMES, cfg.bootstrap, cfg.seed)})
    votes = [majority([o.get(item) for _, _, o, _ in annotators]) for item in key["items"]]
    given = [v for v in votes if v is not None]
    result["majority"] = {"n": len(given), "missing": len(votes) - len(given), **rate_cis(given, OUTCOMES, cfg.bootstrap, cfg.seed)}
    complete = [item for item in key["items"] if all(item in o for _, _, o, _ in annotators)]
    table = [[sum(o[item] == c for _, _, o, _ in annotators) for c in OUTCOMES] for item in complete]
    result["fleiss_kappa"] = fleiss_kappa(table) if len(annotators) >= 2 else None
    result["kappa_items"] = len(complete)
    if cfg.output:
        atomic.write_json(cfg.output, result, ensure_ascii=False)
    print(format_tally(result))
    return result


def format_tally(result: dict) -> str:
    def pct(s: dict) -> str:
        return format_rate(s, "-")

    lines = [f"{'annotator':20s} {'n':>4s}  {'win (A better) %':18s} {'tie %':18s} {'loss %':18s}"]
    for a in result["annotators"] + [{"name": "majority", **result["majority"]}]:
        lines.append(f"{a['name'][:20]:20s} {a['n']:4d}  {pct(a['win']):18s} {pct(a['tie']):18s} {pct(a['loss']):18s}")
    kappa = result["fleiss_kappa"]
    lines.append(f"Fleiss' kappa: {kappa:.3f} over {result['kappa_items']} items answered by all" if kappa is not None
                 else "Fleiss' kappa: undefined (needs >= 2 annotators and ratings in more than one category)")
    return "\n".join(lines)
