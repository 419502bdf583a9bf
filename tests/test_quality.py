"""The results page of `make quality`: table rows and the aims, from saved eval metrics."""

import json

from hire_cli.report import reporting
from hire_cli.runs import quality


def _metrics(loss, served, acc, acc_hire=None, recall_sm=None, recall_ffn=None):
  m = {"step": 10, "loss": loss, "perplexity": 2.0, "downstream/cloze/accuracy": acc,
       "downstream/mean/accuracy": acc}
  if served is not None:
    m["served_loss"] = served
    m["downstream/cloze/accuracy_hire"] = acc_hire
    m["downstream/mean/accuracy_hire"] = acc_hire
    m["top1_agreement"] = 0.9
  if recall_sm is not None:
    m["recall/softmax@32"] = recall_sm
  if recall_ffn is not None:
    m["recall/ffn@k"] = recall_ffn
  return m


RUNS = {"dense": _metrics(5.00, None, 40.0),
        "hire_softmax": _metrics(5.00, 5.02, 40.0, 40.0, recall_sm=0.995),
        "hire_ffn": _metrics(5.08, 5.10, 39.0, 38.0, recall_ffn=0.93),
        "hire": _metrics(5.03, 5.20, 40.5, 38.5, recall_sm=0.98, recall_ffn=0.96)}


def test_aims_say_met_or_missed_with_the_numbers():
  lines = quality.aims(RUNS)
  text = "\n".join(lines)
  assert "5.0300 vs 5.0000 (+0.60%) -> met" in text       # exact loss within 1%
  assert "5.2000 vs 5.0000 (+4.00%) -> MISSED" in text     # served loss is not
  assert "38.50 vs 40.00 (-1.50 points) -> MISSED" in text
  assert "softmax recall@32 >= 0.99: 0.9800 -> MISSED" in text
  assert "mean FFN recall >= 0.95: 0.9600 -> met" in text


def test_results_page_has_every_variant_and_the_curves(tmp_path):
  for v, m in RUNS.items():
    (tmp_path / v / "eval" / quality.EVAL_DATA).mkdir(parents=True)
    (tmp_path / v / "eval" / quality.EVAL_DATA / "metrics.json").write_text(json.dumps(m))
    for step, loss in ((5, 6.0), (10, m["loss"])):
      reporting.append_jsonl(tmp_path / v / "history.jsonl", {"step": step, "loss": loss})
  out = tmp_path / "docs" / "results.md"
  quality.write_results(tmp_path, out, size="tiny", steps=10, limit=3, command="make quality",
                        minutes=1.0)
  page = out.read_text()
  assert "| metric | dense | hire_softmax | hire_ffn | hire |" in page
  assert "| validation loss (exact model) | 5.0000 | 5.0000 | 5.0800 | 5.0300 |" in page
  assert "| mean FFN group recall | - | - | 0.9300 | 0.9600 |" in page
  assert (tmp_path / "docs" / "results_curves.png").stat().st_size > 1000
