"""Tests for report.py: resumable JSON lines, tables and plots."""

import math


from sampling_mlp import experiment, report

PNG = b"\x89PNG\r\n\x1a\n"


def _spec(**kw):
  base = dict(method="standard", dataset="tiny", depth=1, hidden=16,
              batch_size=32, epochs=2, activation="relu")
  base.update(kw)
  return experiment.RunSpec.make(**base)


def test_results_log_skips_torn_lines_and_drops_runs(tmp_path):
  log = report.ResultsLog(str(tmp_path / "r.jsonl"))
  for run_id, epoch in (("a", 1), ("a", 2), ("b", 1)):
    log.append({"run_id": run_id, "epoch": epoch})
  with open(log.path, "a") as f:
    f.write('{"run_id": "c", "ep')  # a kill in the middle of a line
  assert [(r["run_id"], r["epoch"]) for r in log.read()] == [
      ("a", 1), ("a", 2), ("b", 1)]
  assert len(log.finished("a", 2)) == 2
  assert log.finished("b", 2) == []
  log.drop_runs({"b"})
  assert [r["run_id"] for r in log.read()] == ["a", "a"]
  assert open(log.path).read().endswith("}\n")  # the torn line is gone too


def test_jsonl_round_trip_with_inf_and_nan(tmp_path):
  path = str(tmp_path / "rows.jsonl")
  rows = [{"x": math.inf, "y": [1.0, math.nan]}, {"x": 2}]
  report.write_jsonl(path, rows)
  back = report.read_jsonl(path)
  assert back[0]["x"] == math.inf and math.isnan(back[0]["y"][1])
  assert back[1] == {"x": 2}


def test_markdown_and_text_tables():
  rows = [{"a": 1, "b": 0.123456}, {"a": "x", "b": math.nan}]
  md = report.markdown_table(rows, (("a", "A"), ("b", "B")))
  assert md.splitlines() == ["| A | B |", "|---|---|", "| 1 | 0.1235 |",
                             "| x | n/a |"]
  text = report.text_table(rows, (("a", "A"), ("b", "B")))
  assert text.splitlines()[0].split() == ["A", "B"]


def test_summary_table_and_plots(tiny, tmp_path):
  runs = experiment.run_specs([_spec(), _spec(depth=2)],
                              results_path=str(tmp_path / "r.jsonl"),
                              dataset_loader=lambda name, **kw: tiny,
                              progress=False)
  summary = report.final_rows(runs)
  assert [s["depth"] for s in summary] == [1, 2]
  assert summary[0]["total_seconds"] == runs[0][-1]["cumulative_seconds"]
  md = report.markdown_table(summary, report.SUMMARY_COLUMNS)
  assert md.count("\n") == 4 and "final test acc" in md
  report.plot_depth(summary, str(tmp_path / "d.png"))
  report.plot_per_epoch(runs, str(tmp_path / "t.png"))
  report.plot_panels([report.Panel(report.epoch_lines(runs, "dev_accuracy"))],
                     str(tmp_path / "p.png"))
  report.plot_grouped_bars(str(tmp_path / "g.png"), categories=["a", "b"],
                           panels=[("t", "y", False, {"s": [1.0, math.nan]})])
  for name in ("d.png", "t.png", "p.png", "g.png"):
    with open(tmp_path / name, "rb") as f:
      assert f.read(8) == PNG
  assert report.config_value(runs[0][0], "activation") == "relu"
  assert report.config_value(runs[0][0], "missing", 3) == 3
  assert report.format_values([0.5, 0.25]) == "0.500 / 0.250"


def test_panel_layout_keeps_the_title_and_legends_clear(tmp_path,
                                                       monkeypatch):
  figs = []
  monkeypatch.setattr(report, "save_figure",
                      lambda fig, path: figs.append(fig))
  lines = [report.Line(f"line {i}", [1, 2], [0.1 * i, 0.2])
           for i in range(12)]
  report.plot_panels([report.Panel(lines, title="many",
                                   legend_outside=True),
                      report.Panel(lines[:2], title="two")]
                     + [report.Panel(lines[:1], title="one")] * 6,
                     str(tmp_path / "p.png"), title="Suptitle", ncols=2)
  (fig,) = figs
  fig.canvas.draw()
  renderer = fig.canvas.get_renderer()
  outside, inside = fig.axes[:2]
  # The long legend sits right of its axes; the short one inside its own.
  box = outside.get_window_extent(renderer)
  assert outside.get_legend().get_window_extent(renderer).x0 >= box.x1
  legend = inside.get_legend().get_window_extent(renderer)
  box = inside.get_window_extent(renderer)
  assert box.x0 <= legend.x0 and legend.x1 <= box.x1
  # The figure's title is above every panel's title, and inside the figure
  # (at four rows, tight_layout alone lets the two overlap).
  title = fig.texts[0].get_window_extent(renderer)
  for ax in fig.axes:
    assert title.y0 >= ax.title.get_window_extent(renderer).y1
  assert title.y1 <= fig.bbox.y1 and fig.get_figwidth() == 2 * 9.0
  report.pyplot().close(fig)


def test_written_tables_are_readable_by_everyone(tmp_path):
  path = tmp_path / "t.md"
  report.write_text(str(path), "| a |\n")
  assert path.read_text() == "| a |\n"
  assert oct(path.stat().st_mode & 0o777) == oct(0o644)
