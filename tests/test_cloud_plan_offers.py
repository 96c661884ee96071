"""Every offer the users can rent in ``sdcloud plan``: Paperspace Pro/Growth, AWS, Google
Cloud, Azure (on-demand and spot), storage in the total, ``--explain``, and catalog files
refused with the line and field of a missing price or a bad date."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sdcloud.cloud.planner import Planner, Workload, explain
from sdcloud.cloud.price_catalog import _packaged, check_date, check_figures, load_price_catalog
from sdcloud.cloud.throughput import ThroughputTable
from sdcloud.errors import BadRequest


def _plan(*files: Path, **kwargs):
    cat = load_price_catalog(files)
    work = Workload(**{k: kwargs.pop(k) for k in list(kwargs) if k in Workload.__dataclass_fields__})
    return cat, Planner(cat, ThroughputTable(cat.throughput)).plan(work, **kwargs)


def _rows(plan, offer):
    return {r.gpu: r for r in plan.rows if r.offer == offer}


def test_paperspace_pro_and_growth_with_their_storage_and_availability_caveat():
    _, plan = _plan(images=1000, storage_gb=10)
    pro, growth = _rows(plan, "paperspace-pro"), _rows(plan, "paperspace-growth")
    assert set(pro) == {"RTX4000", "RTX5000", "A4000"}
    assert set(growth) == {"A5000", "A6000", "A100-80GB"}
    for row in [*pro.values(), *growth.values()]:
        assert any("not always available" in n for n in row.notes)
        assert row.price_per_hour == 0 and row.fits
    assert {r.fee for r in pro.values()} == {8.0} and {r.total for r in pro.values()} == {8.0}
    assert {r.fee for r in growth.values()} == {39.0}
    # beyond the included storage (15 GB / 50 GB) each GB costs $0.29 a month
    _, plan = _plan(images=1000, storage_gb=60)
    assert _rows(plan, "paperspace-pro")["A4000"].storage_cost == pytest.approx(45 * 0.29)
    assert _rows(plan, "paperspace-growth")["A6000"].storage_cost == pytest.approx(10 * 0.29)


@pytest.mark.parametrize(("provider", "gpus"), [("aws", {"T4", "A10G", "V100"}), ("gcp", {"T4", "L4", "A100"}),
                                                 ("azure", {"T4"})])
def test_cloud_vms_on_demand_and_spot(provider, gpus):
    _, plan = _plan(images=2000, providers=[provider])
    on_demand, spot = _rows(plan, f"{provider}-ondemand"), _rows(plan, f"{provider}-spot")
    assert set(on_demand) == gpus and set(spot) == gpus
    for gpu in gpus:
        assert spot[gpu].price_per_hour < on_demand[gpu].price_per_hour
        assert any("preemptible" in n for n in spot[gpu].notes)
        assert not any("preemptible" in n for n in on_demand[gpu].notes)


def test_storage_is_part_of_the_total():
    _, plan = _plan(images=3000, storage_gb=100, providers=["aws"])
    for row in plan.rows:
        assert row.storage_cost == pytest.approx(100 * 0.08)  # the instance's EBS volume
        assert row.total == pytest.approx(row.fee + row.compute_cost + row.storage_cost)
    _, plan = _plan(images=3000, storage_gb=100, currency="JPY", providers=["colab"])
    assert {r.storage_cost for r in plan.rows} == {250}  # Google Drive 100 GB in yen, not converted


@pytest.mark.parametrize(("store", "cost"), [("hf", 9.0), ("s3", 0.023 * 200), ("r2", 0.015 * 190),
                                              ("gdrive", 9.99)])
def test_store_flag_prices_storage_on_that_store_for_every_row(store, cost):
    _, plan = _plan(images=100, storage_gb=200, store=store)
    assert {round(r.storage_cost, 6) for r in plan.rows if r.storage_cost is not None} == {round(cost, 6)}


def test_unknown_store_is_refused():
    with pytest.raises(BadRequest, match="unknown --store 'dropbox'"):
        _plan(images=1, store="dropbox")


def test_every_packaged_price_is_dated_and_sourced():
    cat = load_price_catalog()
    for offer in cat.offers:
        for gpu in offer.gpus:
            date, source = gpu.date or offer.date, gpu.source or offer.source
            assert check_date(date) is None, (offer.id, gpu.gpu, date)
            assert source.strip(), (offer.id, gpu.gpu)
    for opt in cat.storage.values():
        assert check_date(opt.date) is None and opt.source, opt.id
    check_figures(_packaged("prices.json", lined=True), {}, "prices.json")


def test_explain_shows_the_arithmetic_of_a_row():
    cat, plan = _plan(images=3000, storage_gb=60, providers=["paperspace"])
    text = "\n".join(explain(plan, cat, "paperspace-pro"))
    row = _rows(plan, "paperspace-pro")["A4000"]
    assert f"{row.gpu_hours:,.2f} h" in text
    assert "15 GB included" in text and "$13.05" in text
    assert f"= ${row.total:,.2f}" in text
    assert "not always available" in text and "[apievang-pps]" in text and "2026-09-20" in text


def _cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDCLOUD_")}
    env.update(SDCLOUD_DATA_DIR=str(tmp_path / "data"), LANG="C.UTF-8", LANGUAGE="", LC_ALL="")
    return subprocess.run([sys.executable, "-m", "sdcloud", *args], capture_output=True, text=True, env=env,
                          timeout=60)


def test_explain_on_the_command_line(tmp_path):
    res = _cli("plan", "--images", "3000", "--explain", "colab-pro", "--gpu", "T4", "--currency", "JPY",
               tmp_path=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "1.96 CU/h x ¥1,072 / 100 CU" in res.stdout and "100 included" in res.stdout
    res = _cli("plan", "--explain", "nope", tmp_path=tmp_path)
    assert res.returncode == 1 and res.stderr.count("\n") == 1
    assert "unknown offer 'nope'" in res.stderr and "aws-spot" in res.stderr


def test_plan_lists_offer_ids_for_explain(tmp_path):
    res = _cli("plan", "--images", "10", "--provider", "azure", tmp_path=tmp_path)
    assert "(azure-spot)" in res.stdout and "(azure-ondemand)" in res.stdout


CATALOG = """{
  "offers": [
    {
      "id": "lambda",
      "provider": "lambda",
      "plan": "On-demand",
      "billing": "hourly",
      "gpus": {
        "A10G": {"price": {"USD": 0.75}},
        "A100": %s
      },
      "date": %s,
      "source": "lambda.ai pricing page"
    }
  ]
}
"""


@pytest.mark.parametrize(
    ("a100", "date", "message"),
    [
        ('{"date": "2026-10"}', '"2026-10"', 'line 10: offers[lambda].gpus.A100.price is missing'),
        ('{"price": {"USD": 1.29}}', '"2026-13"', "line 12: offers[lambda].date: bad date '2026-13': no such day"),
        ('{"price": {"USD": 1.29}}', '"last week"', "line 12: offers[lambda].date: bad date 'last week'"),
        ('{"price": {"USD": 1.29}, "date": "2099-01"}', '"2026-10"',
         "line 10: offers[lambda].gpus.A100.date: bad date '2099-01': it is in the future"),
        ('{"price": {"USD": 1.29}}', "null", "line 12: offers[lambda].date: must be a string"),
        ('{"price": 1.29}', '"2026-10"', "line 10: offers[lambda].gpus.A100.price must be an object"),
    ],
)
def test_catalog_file_with_missing_price_or_bad_date_names_line_and_field(tmp_path, a100, date, message):
    path = tmp_path / "cat.json"
    path.write_text(CATALOG % (a100, date))
    with pytest.raises(BadRequest) as err:
        load_price_catalog([path])
    assert str(err.value).startswith(f"catalog file {path}")
    assert message in str(err.value)
    res = _cli("plan", "--catalog", str(path), tmp_path=tmp_path)
    assert res.returncode == 1 and message in res.stderr and "Traceback" not in res.stderr


def test_new_offer_without_date_is_refused(tmp_path):
    path = tmp_path / "cat.json"
    path.write_text(json.dumps({"offers": [{"id": "x", "provider": "x", "plan": "p", "billing": "hourly",
                                            "gpus": {"T4": {"price": {"USD": 0.1}}}, "source": "s"}]}, indent=2))
    with pytest.raises(BadRequest, match=r"line 9: offers\[x\].gpus.T4.date is missing"):
        load_price_catalog([path])


def test_overriding_a_packaged_price_keeps_its_date_rule(tmp_path):
    """A new price for an existing GPU is fine (the offer has a date); no price at all for a GPU
    the offer already has is fine too (the packaged price stays)."""
    path = tmp_path / "cat.json"
    path.write_text(json.dumps({"offers": [{"id": "aws-spot", "gpus": {"T4": {"price": {"USD": 0.15}}}},
                                           {"id": "gcp-spot", "gpus": {"L4": {"source": "my console"}}}]}))
    cat, plan = _plan(path, images=10, providers=["aws", "gcp"])
    assert _rows(plan, "aws-spot")["T4"].price_per_hour == 0.15
    assert _rows(plan, "gcp-spot")["L4"].price_per_hour == pytest.approx(0.28)
