"""`rdo eval human export` / `tally`: blind sheets, the key, hand-computed tallies and Fleiss' kappa.

The tally test's table (A's outcome per item, in key order; '-' = left blank):

  item | ann1 | ann2 | ann3 | majority | counts (win, tie, loss) -> P_i
  1    | win  | win  | win  | win      | (3, 0, 0) -> 1
  2    | win  | loss | tie  | tie      | (1, 1, 1) -> 0
  3    | tie  | tie  | tie  | tie      | (0, 3, 0) -> 1
  4    | loss | loss | loss | loss     | (0, 0, 3) -> 1
  5    | win  | win  | loss | win      | (2, 0, 1) -> 1/3
  6    | -    | win  | win  | win      | (not answered by all: left out of kappa)
  P = 10/15 = 2/3; p = (6, 4, 5)/15; P_e = (36 + 16 + 25)/225 = 77/225; kappa = (2/3 - 77/225)/(1 - 77/225) = 73/148.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from rdo.cli import main
from rdo.config import HumanExportConfig, HumanTallyConfig
from rdo.evaluate.human import fleiss_kappa, human_export, human_tally

ANSWERS = {
    "ann1": ["win", "win", "tie", "loss", "win", None],
    "ann2": ["win", "loss", "tie", "loss", "win", "win"],
    "ann3": ["win", "tie", "tie", "loss", "loss", "win"],
}


def write_generations(tmp_path: Path, n: int = 6) -> tuple[Path, Path]:
    a, b = tmp_path / "sys_a.jsonl", tmp_path / "sys_b.jsonl"
    rows = lambda who: [{"id": f"p{i}", "rdo_row": i + 1, "prompt": [{"role": "user", "content": f"question {i}?"}],  # noqa: E731
                         "sample_index": 0, "response": f"{who} answers {i} <b>bold</b> & </script>", "model": f"model-{who}"}
                        for i in range(n)]
    a.write_text("".join(json.dumps(r) + "\n" for r in rows("alpha")))
    b.write_text("".join(json.dumps(r) + "\n" for r in reversed(rows("beta"))))
    return a, b


@pytest.fixture
def exported(tmp_path):
    a, b = write_generations(tmp_path)
    out = tmp_path / "sheet"
    assert main(["eval", "human", "export", "--generations_a", str(a), "--generations_b", str(b), "--output_dir", str(out),
                 "--seed", "0"]) == 0
    return out, Path(str(out) + ".key.json")


def choice_for(outcome: str | None, response_1: str) -> str:
    """The positional choice an annotator makes to give A this outcome."""
    if outcome is None:
        return ""
    if outcome == "tie":
        return "tie"
    return "1" if (outcome == "win") == (response_1 == "a") else "2"


def test_fleiss_kappa_textbook():
    # Fleiss (1971) as worked in Wikipedia's "Fleiss' kappa": 10 subjects, 14 raters, 5 categories -> 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(table) == pytest.approx(0.20993, abs=1e-5)
    assert fleiss_kappa([[2, 0], [0, 2]]) == pytest.approx(1.0)  # perfect agreement
    assert fleiss_kappa([[1, 1], [1, 1]]) == pytest.approx(-1.0)  # every pair disagrees
    assert fleiss_kappa([[3, 0], [3, 0]]) is None  # one category only: undefined
    with pytest.raises(ValueError, match="same number of ratings"):
        fleiss_kappa([[2, 0], [1, 0]])


def test_export_is_blind_shuffled_and_keyed(exported):
    out, key_path = exported
    assert sorted(p.name for p in out.iterdir()) == ["sheet.csv", "sheet.html"]  # the key is not in the folder
    key = json.loads(key_path.read_text())
    rows = list(csv.DictReader(io.StringIO((out / "sheet.csv").read_text())))
    assert [r["item"] for r in rows] == list(key["items"]) and len(rows) == 6
    assert all(r["choice"] == "" and r["sheet_id"] == key["sheet_id"] for r in rows)
    order = [key["items"][r["item"]]["key"] for r in rows]
    assert sorted(order) == [f"id=p{i}/sample=0" for i in range(6)] and order != sorted(order)  # shuffled
    sides = [key["items"][r["item"]]["response_1"] for r in rows]
    assert set(sides) == {"a", "b"}  # A is Response 1 on some items, B on others
    for r, side in zip(rows, sides):
        i = key["items"][r["item"]]["key"].split("=p")[1].split("/")[0]
        who = "alpha" if side == "a" else "beta"
        assert r["response_1"].startswith(f"{who} answers {i} ") and r["prompt"] == f"question {i}?"
    for name in ("sheet.csv", "sheet.html"):  # nothing on the sheets names the systems
        text = (out / name).read_text()
        assert "sys_a" not in text and "model-alpha" not in text and "model-beta" not in text


def test_tally_hand_computed(exported, tmp_path, capsys):
    out, key_path = exported
    key = json.loads(key_path.read_text())
    items = list(key["items"])
    rows = list(csv.DictReader(io.StringIO((out / "sheet.csv").read_text())))
    # ann1 fills sheet.csv itself; ann2 sends what the page downloads; ann3 a spreadsheet export (BOM, TIE, no name)
    sheet1 = tmp_path / "ann1.csv"
    with sheet1.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r, o in zip(rows, ANSWERS["ann1"]):
            w.writerow({**r, "choice": choice_for(o, key["items"][r["item"]]["response_1"])})
    sheet2 = tmp_path / "download.csv"
    sheet2.write_text("item,choice,annotator,sheet_id\n" + "".join(
        f"{it},{choice_for(o, key['items'][it]['response_1'])},ann2,{key['sheet_id']}\n" for it, o in zip(items, ANSWERS["ann2"])))
    sheet3 = tmp_path / "ann3.csv"
    sheet3.write_text("\ufeffitem,choice\n" + "".join(
        f"{it},{choice_for(o, key['items'][it]['response_1']).upper()}\n" for it, o in zip(items, ANSWERS["ann3"])), encoding="utf-8")
    report = tmp_path / "tally.json"
    assert main(["eval", "human", "tally", "--sheets", str(sheet1), str(sheet2), str(sheet3), "--key", str(key_path),
                 "--output", str(report), "--bootstrap", "200"]) == 0
    res = json.loads(report.read_text())
    names = [a["name"] for a in res["annotators"]]
    assert names == ["ann1", "ann2", "ann3"]  # ann1's sheet has no name: its file's stem
    tallies = [(a["win"]["n"], a["tie"]["n"], a["loss"]["n"], a["unanswered"]) for a in res["annotators"]]
    assert tallies == [(3, 1, 1, 1), (3, 1, 2, 0), (2, 2, 2, 0)]
    m = res["majority"]
    assert (m["win"]["n"], m["tie"]["n"], m["loss"]["n"], m["n"]) == (3, 2, 1, 6)
    assert m["win"]["rate"] == pytest.approx(0.5) and m["win"]["ci95"][0] < 0.5 < m["win"]["ci95"][1]
    assert res["fleiss_kappa"] == pytest.approx(73 / 148) and res["kappa_items"] == 5
    assert "Fleiss' kappa: 0.493 over 5 items" in capsys.readouterr().out


def test_tally_errors_name_file_row_field(exported, tmp_path, capsys):
    out, key_path = exported
    items = list(json.loads(key_path.read_text())["items"])
    bad = tmp_path / "bad.csv"
    bad.write_text(f"item,choice\n{items[0]},1\n{items[1]},B better\n")
    assert main(["eval", "human", "tally", "--sheets", str(bad), "--key", str(key_path)]) == 2
    assert f"{bad}, row 3, field 'choice': 'B better': expected 1, 2 or tie" in capsys.readouterr().err
    bad.write_text("item,choice\nitem-9999,1\n")
    assert main(["eval", "human", "tally", "--sheets", str(bad), "--key", str(key_path)]) == 2
    assert "row 2, field 'item': 'item-9999' is not in the key" in capsys.readouterr().err
    bad.write_text(f"item,choice,sheet_id\n{items[0]},1,0123456789abcdef\n")
    assert main(["eval", "human", "tally", "--sheets", str(bad), "--key", str(key_path)]) == 2
    assert "use the key of this export" in capsys.readouterr().err
    bad.write_text("what,ever\n1,2\n")
    assert main(["eval", "human", "tally", "--sheets", str(bad), "--key", str(key_path)]) == 2
    assert "no column(s) ['item', 'choice']" in capsys.readouterr().err
    with pytest.raises(ValueError, match="inside --output_dir"):
        HumanExportConfig(generations_a="a", generations_b="b", output_dir=str(out), key=str(out / "key.json"))
    with pytest.raises(ValueError, match="--sheets"):
        HumanTallyConfig(key="k")


def test_single_annotator_has_no_kappa(exported, tmp_path):
    out, key_path = exported
    res = human_tally(HumanTallyConfig(sheets=[str(out / "sheet.csv")], key=str(key_path), bootstrap=0))
    assert res["annotators"][0]["n"] == 0 and res["annotators"][0]["unanswered"] == 6
    assert res["fleiss_kappa"] is None and res["majority"]["n"] == 0


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's `chromium` on PATH to render the page headless")
def test_page_renders_in_headless_chromium(exported, tmp_path):
    out, key_path = exported
    key = json.loads(key_path.read_text())
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
         "--dump-dom", (out / "sheet.html").resolve().as_uri()],
        capture_output=True, text=True, timeout=90).stdout
    sections = re.findall(r'<section class="item" id="(item-\d+)">', dom)
    assert sections == list(key["items"])  # every item rendered, in sheet order
    assert dom.count('type="radio"') == 3 * len(sections)
    assert dom.count("&lt;b&gt;bold&lt;/b&gt; &amp; &lt;/script&gt;") == 2 * len(sections)  # responses shown as text
    assert "<b>bold</b>" not in dom
    assert "0 / 6 answered" in dom
    preview = html.unescape(re.search(r'<textarea id="csv-preview" readonly="">(.*?)</textarea>', dom, re.S).group(1))
    rows = list(csv.DictReader(io.StringIO(preview)))  # the CSV the download link would save, before any choice
    assert [r["item"] for r in rows] == list(key["items"]) and {r["sheet_id"] for r in rows} == {key["sheet_id"]}
    assert all(r["choice"] == "" for r in rows)


def test_export_then_tally_python_api(tmp_path):
    a, b = write_generations(tmp_path, n=10)
    cfg = HumanExportConfig(generations_a=str(a), generations_b=str(b), output_dir=str(tmp_path / "s"), num_samples=4, seed=3)
    info = human_export(cfg)
    key = json.loads(Path(cfg.key).read_text())
    assert info["n"] == 4 and len(key["items"]) == 4
    # an annotator who always picks the response of system A wins every item for A
    sheet = tmp_path / "fan.csv"
    sheet.write_text("item,choice\n" + "".join(f"{it},{'1' if v['response_1'] == 'a' else '2'}\n" for it, v in key["items"].items()))
    res = human_tally(HumanTallyConfig(sheets=[str(sheet)], key=cfg.key, bootstrap=0))
    assert res["annotators"][0]["win"]["n"] == 4 and res["majority"]["win"]["rate"] == 1.0


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's `chromium` on PATH to run the page headless")
def test_page_clicks_download_a_csv_that_tallies(exported, tmp_path):
    """Click through the real page in Chromium (a script appended to a copy: choose, sign, press Download) and tally its CSV."""
    out, key_path = exported
    key = json.loads(key_path.read_text())
    driver = """<script>
    let captured = null;  // (names unlike the page's own globals)
    const RealBlob = Blob;
    window.Blob = function (parts, opts) { captured = parts.join(""); return new RealBlob(parts, opts); };
    HTMLAnchorElement.prototype.click = function () {  // the download itself: record what it would save
      const pre = document.createElement("pre"); pre.id = "downloaded"; pre.dataset.name = this.download;
      pre.textContent = captured; document.body.append(pre);
    };
    const radios = [...document.querySelectorAll('input[type="radio"]')];
    radios.filter(r => r.value === "1").forEach(r => r.click());
    document.querySelector('input[type="radio"][value="tie"]').click();  // the first item: changed to tie
    const signer = document.getElementById("annotator"); signer.value = "zoe k"; signer.dispatchEvent(new Event("input"));
    document.getElementById("download").click();
    </script></body>"""
    page = tmp_path / "driven.html"
    page.write_text((out / "sheet.html").read_text().replace("</body>", driver))
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
         "--dump-dom", page.resolve().as_uri()], capture_output=True, text=True, timeout=90).stdout
    m = re.search(r'<pre id="downloaded" data-name="([^"]*)">(.*?)</pre>', dom, re.S)
    assert m, "the Download button saved nothing"
    assert m.group(1) == "annotations-zoe_k.csv" and "6 / 6 answered" in dom
    sheet = tmp_path / "zoe.csv"
    sheet.write_text(html.unescape(m.group(2)))
    res = human_tally(HumanTallyConfig(sheets=[str(sheet)], key=str(key_path), bootstrap=0))
    ann = res["annotators"][0]
    first_a = [v["response_1"] == "a" for v in key["items"].values()][1:]  # "Response 1" on items 2..6
    assert ann["name"] == "zoe k" and ann["unanswered"] == 0
    assert (ann["win"]["n"], ann["tie"]["n"], ann["loss"]["n"]) == (sum(first_a), 1, len(first_a) - sum(first_a))


def test_cli_lists_command_families(capsys):
    assert main(["eval", "--help"]) == 0
    listed = capsys.readouterr().out
    assert all(c in listed for c in ("eval accuracy", "eval judge", "eval human export", "eval human tally"))
    assert "align" not in listed
    assert main(["eval", "human", "--help"]) == 0
    listed = capsys.readouterr().out
    assert "eval human export" in listed and "eval human tally" in listed and "eval judge" not in listed
    assert main(["eval", "human"]) == 2  # a family without a subcommand: its list, and a usage error
    assert main(["eval", "humane"]) == 2 and "eval judge" in capsys.readouterr().out
