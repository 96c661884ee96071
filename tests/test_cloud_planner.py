"""The cost planner against hand-computed cases, the catalog's override/extension merge, and
bad input (unknown names, absurd workloads, malformed catalog files)."""

from __future__ import annotations

import json
import math

import pytest

from sdcloud.cloud.planner import Planner, Workload, parse_size
from sdcloud.cloud.price_catalog import load_price_catalog
from sdcloud.cloud.throughput import ThroughputTable, record_measurement
from sdcloud.errors import BadRequest

# Round-number speeds so the expected figures below can be computed by hand.
SPEEDS = {
    "throughput": {
        "families": {
            "sd15": {
                "gpus": {"T4": {"it_s": 5.0, "source": "test"}, "RTX 3090": {"it_s": 10.0, "source": "test"}}
            },
            "sdxl": {"gpus": {"T4": {"it_s": 1.0, "source": "test"}}},
        }
    }
}


@pytest.fixture
def speeds_file(tmp_path):
    path = tmp_path / "speeds.json"
    path.write_text(json.dumps(SPEEDS))
    return path


def planner(*files, measurements=None, rates=None):
    cat = load_price_catalog(files, rates=rates)
    return Planner(cat, ThroughputTable(cat.throughput, measurements))


def row(plan, offer, gpu):
    (found,) = [r for r in plan.rows if r.offer == offer and r.gpu == gpu]
    return found


# Colab at the published 2023 JP rates: Pro ¥1,072 for 100 CU, Pro+ ¥5,243 for 500 CU --------
def test_colab_pro_hourly_rates_in_yen_match_the_published_ones():
    plan = planner().plan(Workload(), currency="JPY", providers=["colab"])
    assert round(row(plan, "colab-pro", "T4").price_per_hour) == 21
    assert round(row(plan, "colab-pro", "V100").price_per_hour) == 57
    assert round(row(plan, "colab-pro", "A100").price_per_hour) == 140
    assert row(plan, "colab-pro", "T4").price_per_hour == pytest.approx(10.72 * 1.96)


def test_colab_pro_monthly_cost_fee_then_whole_packs_of_units():
    p = planner()
    # 50 h of T4 = 98 CU: inside Pro's 100 units, so the month costs the fee alone.
    plan = p.plan(Workload(train_hours=50), currency="JPY", providers=["colab"], gpus=["T4"])
    assert row(plan, "colab-pro", "T4").total == pytest.approx(1072)
    # Pro+ 255 h of T4 = 499.8 CU: still inside its 500.
    assert row(plan, "colab-proplus", "T4").gpu_hours == 50
    plan = p.plan(Workload(train_hours=255), currency="JPY", providers=["colab"], gpus=["T4"])
    assert row(plan, "colab-proplus", "T4").total == pytest.approx(5243)
    # 10 h of A100 = 130.8 CU: 30.8 over, so one extra pack of 100 (¥1,072).
    plan = p.plan(Workload(train_hours=10), currency="JPY", providers=["colab"], gpus=["A100"])
    assert row(plan, "colab-pro", "A100").total == pytest.approx(2144)
    # Pro+ 40 h of A100 = 523.2 CU: one pack on top of ¥5,243.
    plan = p.plan(Workload(train_hours=40), currency="JPY", providers=["colab"], gpus=["A100"])
    assert row(plan, "colab-proplus", "A100").total == pytest.approx(6315)
    # Pay-as-you-go has no yen price in the catalog: $9.99/pack converted at the rate (150).
    assert row(plan, "colab-payg", "A100").compute_cost == pytest.approx(6 * 9.99 * 150)


def test_images_become_gpu_hours_through_the_throughput_table(speeds_file):
    p = planner(speeds_file)
    # T4 at 5 it/s: 20 steps at 512x512 take 4 s, so 900 images are one GPU-hour.
    plan = p.plan(Workload(images=900, steps=20), currency="JPY", providers=["colab"], gpus=["T4"])
    assert row(plan, "colab-pro", "T4").seconds_per_image == pytest.approx(4.0)
    assert row(plan, "colab-pro", "T4").gpu_hours == pytest.approx(1.0)
    # Twice the pixels, twice the time.
    plan = p.plan(Workload(images=900, width=1024, height=512), providers=["colab"], gpus=["T4"])
    assert row(plan, "colab-pro", "T4").gpu_hours == pytest.approx(2.0)
    # SDXL T4 at 1 it/s at 1024x1024: 30 steps = 30 s, 120 images = 1 h, plus 2 h of training.
    plan = p.plan(
        Workload(images=120, family="sdxl", steps=30, width=1024, height=1024, train_hours=2),
        providers=["colab"],
        gpus=["T4"],
    )
    assert row(plan, "colab-pro", "T4").gpu_hours == pytest.approx(3.0)


def test_budget_says_how_many_images_each_option_buys(speeds_file):
    p = planner(speeds_file)
    plan = p.plan(Workload(steps=20), currency="JPY", budget=3000, providers=["colab"], gpus=["T4"])
    # ¥3,000 - ¥1,072 fee = ¥1,928: one more pack -> 200 CU -> 200/1.96 h at 900 images/h.
    assert row(plan, "colab-pro", "T4").images_for_budget == int(200 / 1.96 * 900)
    # Pro+ costs more than the budget: nothing.
    assert row(plan, "colab-proplus", "T4").images_for_budget == 0
    # RunPod on-demand RTX 3090 $0.39/h, 10 GB network volume ($0.70): $9.30 buys 23.85 h at 1800/h.
    plan = p.plan(Workload(storage_gb=10), budget=10, providers=["runpod"], gpus=["RTX 3090"])
    r = row(plan, "runpod-ondemand", "RTX 3090")
    assert r.storage_cost == pytest.approx(0.70)
    assert r.images_for_budget == int((10 - 0.70) / 0.39 * 1800)


def test_ranking_and_plans_that_do_not_fit():
    plan = planner().plan(Workload(train_hours=130, storage_gb=20), currency="USD")
    totals = [r.total for r in plan.rows if r.fits and r.total is not None]
    assert totals == sorted(totals)
    lab = row(plan, "studio-lab", "T4")
    assert not lab.fits and any("120" in n for n in lab.notes)
    pps = row(plan, "paperspace-free", "P5000")
    assert not pps.fits and any("at most 5 GB" in n for n in pps.notes)
    assert plan.rows.index(lab) > plan.rows.index(row(plan, "runpod-ondemand", "RTX 3090"))
    # Drive: 20 GB needs the 100 GB tier ($1.99).
    assert row(plan, "colab-pro", "T4").storage_cost == pytest.approx(1.99)


def test_colab_free_is_listed_as_not_allowed_never_as_the_cheapest():
    plan = planner().plan(Workload(images=100), currency="USD", budget=10, providers=["colab"])
    free = row(plan, "colab-free", "T4")
    assert not free.fits and free.notes[0].startswith("not allowed: Colab's free tier does not allow")
    assert free.images_for_budget is None
    assert plan.rows[0].offer != "colab-free" and plan.rows.index(free) > plan.rows.index(
        row(plan, "colab-pro", "T4")
    )


def test_currency_conversion_uses_the_configurable_rate():
    plan = planner(rates={"JPY": 155}).plan(
        Workload(train_hours=1), currency="JPY", providers=["runpod"], gpus=["RTX 3090"]
    )
    assert row(plan, "runpod-ondemand", "RTX 3090").price_per_hour == pytest.approx(0.39 * 155)
    assert any("155" in n for n in plan.notes)


def test_zero_work_and_free_gpus_never_give_nan_or_infinity():
    plan = planner().plan(Workload(), currency="USD", budget=5)
    text = json.dumps(plan.to_dict(), allow_nan=False)  # raises on NaN/inf
    assert "NaN" not in text
    for r in plan.rows:
        assert r.total is None or math.isfinite(r.total)
    free = row(plan, "paperspace-free", "P5000")
    assert free.total == 0 and free.images_for_budget is not None and free.images_for_budget > 0


def test_measured_runs_replace_the_table(tmp_path):
    for _ in range(3):  # 20 steps at 512x512 in 2 s on T4 = 10 it/s
        record_measurement(tmp_path, gpu="T4", family="sd15", steps=20, width=512, height=512, seconds=2.0)
    (tmp_path / "throughput.jsonl").open("a").write('{"gpu": "T4", "fam')  # a torn last line
    plan = planner(measurements=tmp_path / "throughput.jsonl").plan(
        Workload(images=1800), providers=["colab"], gpus=["T4"]
    )
    r = row(plan, "colab-pro", "T4")
    assert r.gpu_hours == pytest.approx(1.0)
    assert r.throughput_source.startswith("measured")


# Catalog override / extension -------------------------------------------------------------
def test_user_catalog_overrides_extends_and_removes(tmp_path):
    user = tmp_path / "mine.json"
    user.write_text(
        json.dumps(
            {
                "offers": [
                    {"id": "colab-pro", "monthly_fee": {"JPY": 1179}},
                    {"id": "vast-interruptible", "remove": True},
                    {
                        "id": "my-lab",
                        "provider": "mylab",
                        "plan": "Desk",
                        "billing": "hourly",
                        "gpus": {"RTX 4090": {"price": {"USD": 0.2}}},
                        "source": "my invoice",
                        "date": "2026-11",
                    },
                ],
                "storage": {
                    "google-drive": {
                        "tiers": [{"gb": 15, "price": {"USD": 0}}, {"gb": 200, "price": {"USD": 2.99}}]
                    }
                },
            }
        )
    )
    cat = load_price_catalog([user])
    offers = {o.id: o for o in cat.offers}
    assert "vast-interruptible" not in offers and "vast-ondemand" in offers
    assert offers["colab-pro"].monthly_fee == {"JPY": 1179, "USD": 9.99}  # merged key by key
    assert offers["colab-pro"].included_cu == 100  # untouched fields kept
    assert offers["my-lab"].gpus[0].price == {"USD": 0.2}
    assert cat.storage["google-drive"].tiers[-1][0] == 200
    plan = Planner(cat, ThroughputTable(cat.throughput)).plan(Workload(train_hours=10), providers=["mylab"])
    assert plan.rows[0].total == pytest.approx(2.0)


# Bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "plan_kwargs", "message"),
    [
        ({"images": -1}, {}, "--images must be between 0"),
        ({"images": 10**12}, {}, "--images must be between"),
        ({"steps": 0}, {}, "--steps must be between 1"),
        ({"steps": float("nan")}, {}, "--steps must be a finite number"),
        ({"train_hours": 1000}, {}, "744 hours"),
        ({"train_hours": float("inf")}, {}, "--train-hours must be a finite number"),
        ({"storage_gb": -5}, {}, "--storage-gb"),
        ({"width": 10}, {}, "--size width"),
        ({"family": "sd3"}, {}, "unknown model family 'sd3'"),
        ({}, {"currency": "EUR"}, "unknown currency 'EUR'"),
        ({}, {"providers": ["lambda"]}, "unknown provider 'lambda'"),
        ({}, {"gpus": ["H900"]}, "unknown GPU 'H900'"),
        ({}, {"budget": -3}, "--budget"),
    ],
)
def test_bad_input_is_a_clear_message_naming_the_field(kwargs, plan_kwargs, message):
    with pytest.raises(BadRequest, match=message.replace("(", r"\(")):
        planner().plan(Workload(**kwargs), **plan_kwargs)


def test_bad_size_text():
    assert parse_size("768x512") == (768, 512)
    with pytest.raises(BadRequest, match="--size must look like 512x512"):
        parse_size("big")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"offers": [', "not valid JSON: .* line 1"),
        ("[1, 2]", "top level must be a JSON object"),
        (
            '{"offers": [{"id": "colab-pro", "cu_pack": {"size": 0}}]}',
            r"offers\[colab-pro\]\.cu_pack\.size must be a positive number, got 0",
        ),
        (
            '{"offers": [{"id": "colab-pro", "cu_per_hour": {"T4": "abc"}}]}',
            r"offers\[colab-pro\]\.cu_per_hour\.T4 must be a positive number, got 'abc'",
        ),
        (
            '{"offers": [{"id": "runpod-ondemand", "gpus": {"RTX 3090": {"price": {"EUR": 1}}}}]}',
            "unknown currency 'EUR'",
        ),
        (
            '{"offers": [{"id": "x", "provider": "p", "plan": "q", "billing": "monthly", "gpus": {}}]}',
            r"offers\[x\]\.billing must be one of",
        ),
        ('{"currency": {"rates_per_usd": {"JPY": -1}}}', r"rates_per_usd\.JPY must be a positive number"),
        (
            '{"throughput": {"families": {"sd15": {"gpus": {"T4": {"it_s": 0}}}}}}',
            r"throughput\.families\.sd15\.gpus\.T4\.it_s",
        ),
        ('{"offers": {"id": "x"}}', "'offers' must be a list"),
    ],
)
def test_malformed_catalog_file_names_the_file_and_field(tmp_path, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(BadRequest, match=message) as err:
        load_price_catalog([bad])
    assert "bad.json" in str(err.value)


def test_missing_catalog_file():
    with pytest.raises(BadRequest, match="catalog file /nonexistent.json not found"):
        load_price_catalog(["/nonexistent.json"])
