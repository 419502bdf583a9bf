from hire_cli.report import eval_report


def test_display_rows_put_each_interval_beside_its_value():
  m = {"loss": 5.0, "downstream/mp_swap/accuracy": 80.0, "downstream/mp_swap/accuracy_lo": 75.0,
       "downstream/mp_swap/accuracy_hi": 84.0, "downstream/x/accuracy_lo": 1.0}
  rows = dict(eval_report.display_rows(m))
  assert rows["downstream/mp_swap/accuracy"] == "80.0000 [75.0000, 84.0000]"
  assert not {"downstream/mp_swap/accuracy_lo", "downstream/mp_swap/accuracy_hi"} & set(rows)
  assert rows["downstream/x/accuracy_lo"] == "1.0000"  # no base value: kept as it is
  assert rows["loss"] == "5.0000"
