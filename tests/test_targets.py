"""experiments.report.target_lines, the target check demo.py prints: each target read from an evaluate() result and
compared with its goal (met / MISSED / n/a when the metric is absent)."""
from experiments import report


def result(rec=0.95, top10=0.2, style_nmi=0.91, purity=0.9, nmi=0.79, live_k=13,
           live_l=5):
  return {"rec": rec, "ret": {"top10": top10},
          "clustering": {"category": {"level_l": {"purity": purity, "nmi": nmi}},
                         "style": {"level_k": {"nmi": style_nmi}}},
          "live_k": live_k, "live_l": live_l}


def test_each_target_met_or_missed():
  lines = report.target_lines(result(), minutes=16.0)
  state = {line.split(":")[0].strip(): line.rsplit(":", 1)[1].strip()
           for line in lines}
  assert state == {
      "wall time 16.0 min <= 15": "MISSED",
      "Rec 0.950 >= 0.9": "met",
      "Ret@10 0.200 >= 0.3": "MISSED",
      "level-k vs style NMI 0.910 >= 0.9": "met",
      "level-l vs category purity 0.900 >= 0.9": "met",   # the goal itself counts
      "level-l vs category NMI 0.790 >= 0.8": "MISSED",
      "live level-l units 5 < live level-k components 13": "met"}


def test_equal_live_counts_and_missing_styles():
  r = result(live_k=6, live_l=6)
  del r["clustering"]["style"]
  lines = report.target_lines(r, minutes=1.0)
  assert "level-k vs style NMI - >= 0.9: n/a" in [l.strip() for l in lines]
  assert lines[-1].endswith("MISSED")
