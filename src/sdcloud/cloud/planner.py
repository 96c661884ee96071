"""``sdcloud plan``: what a month of your work costs on each provider/plan/GPU.

GPU-hours come from the throughput table (images x time per image, plus training hours).
Each offer turns GPU-hours into money its own way: an hourly price, or Colab's compute units
(a monthly fee that includes some units, then whole packs of extra units). Storage is priced
by the offer's storage option. With a budget, the same functions run backwards to say how many
images that money buys. Nothing here divides by a quantity that can be zero.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from sdcloud.cloud.price_catalog import GpuOffer, Offer, PriceCatalog, StorageOption
from sdcloud.cloud.throughput import ThroughputTable
from sdcloud.errors import BadRequest

HOURS_PER_MONTH = 744  # 31 days
MAX_IMAGES = 10_000_000
MAX_STEPS = 1000
MAX_SIDE = 8192
MAX_STORAGE_GB = 1_000_000
# ``plan --store NAME``: short names for the stores sdcloud writes to (any storage id works too)
STORE_ALIASES = {"drive": "google-drive", "gdrive": "google-drive", "hf": "hf-hub", "hub": "hf-hub"}


@dataclass(frozen=True)
class Workload:
    images: int = 0
    family: str = "sd15"
    steps: int = 20
    width: int = 512
    height: int = 512
    train_hours: float = 0.0
    storage_gb: float = 0.0
    train_steps: int = 0  # LoRA training runs a month: steps each x runs, at train_batch and train_size
    train_runs: int = 1
    train_batch: int = 2
    train_size: int = 0  # 0: 512 for sd15, 1024 for sdxl

    def check(self) -> Workload:
        """Reject negative, non-finite and absurd values, naming the field."""
        _bounded("--images", self.images, 0, MAX_IMAGES, integer=True)
        _bounded("--steps", self.steps, 1, MAX_STEPS, integer=True)
        _bounded("--size width", self.width, 64, MAX_SIDE, integer=True)
        _bounded("--size height", self.height, 64, MAX_SIDE, integer=True)
        _bounded(
            "--train-hours",
            self.train_hours,
            0,
            HOURS_PER_MONTH,
            hint="a month has at most 744 hours on one GPU",
        )
        _bounded("--storage-gb", self.storage_gb, 0, MAX_STORAGE_GB)
        _bounded("--train-steps", self.train_steps, 0, 10_000_000, integer=True)
        _bounded("--train-runs", self.train_runs, 1, 10_000, integer=True)
        _bounded("--train-batch", self.train_batch, 1, 256, integer=True)
        _bounded("--train-size", self.train_size, 0, MAX_SIDE, integer=True)
        return self

    @property
    def train_side(self) -> int:
        return self.train_size or (1024 if self.family == "sdxl" else 512)


# One LoRA training step costs about this many inference steps per image in the batch (forward +
# backward of one image vs. a CFG inference step of two): 3.0 matches the HF LoRA blog's 2080 Ti
# run (bs 1 x 4 accumulation, 512px, 15k steps in ~5 h) against that card's inference speed.
TRAIN_STEP_FACTOR = 3.0


def training_hours(throughput: ThroughputTable, work: Workload, gpu: str) -> tuple[float, str] | None:
    """GPU-hours of ``work``'s LoRA training on ``gpu`` (None when the GPU has no figure)."""
    if not work.train_steps:
        return 0.0, ""
    per = throughput.seconds_per_image(work.family, gpu, 1, work.train_side, work.train_side)
    if per is None:
        return None
    seconds = work.train_steps * work.train_runs * TRAIN_STEP_FACTOR * work.train_batch * per[0]
    return seconds / 3600, per[1]


def _bounded(name: str, value: Any, lo: float, hi: float, *, integer: bool = False, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRequest(f"{name} must be a finite number, got {value!r}")
    if integer and value != int(value):
        raise BadRequest(f"{name} must be a whole number, got {value!r}")
    if not lo <= value <= hi:
        extra = f" ({hint})" if hint else ""
        raise BadRequest(f"{name} must be between {lo:g} and {hi:g}, got {value:g}{extra}")


def parse_size(text: str) -> tuple[int, int]:
    """``"512x768"`` -> ``(512, 768)``."""
    parts = text.lower().replace("*", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise BadRequest(f"--size must look like 512x512 (width x height), got {text!r}")
    return int(parts[0]), int(parts[1])


@dataclass
class PlanRow:
    offer: str
    provider: str
    plan: str
    gpu: str
    vram_gb: float | None
    billing: str
    price_per_hour: float
    seconds_per_image: float | None
    gpu_hours: float | None
    fee: float
    compute_cost: float | None
    storage_cost: float | None
    total: float | None
    fits: bool
    images_for_budget: int | None = None
    throughput_source: str = ""
    notes: list[str] = field(default_factory=list)
    date: str = ""
    source: str = ""


@dataclass
class Plan:
    currency: str
    workload: Workload
    budget: float | None
    rows: list[PlanRow]
    notes: list[str]
    store: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "currency": self.currency,
            "workload": asdict(self.workload),
            "budget": self.budget,
            "rows": [asdict(r) for r in self.rows],
            "notes": self.notes,
            "store": self.store,
        }


class Planner:
    def __init__(self, catalog: PriceCatalog, throughput: ThroughputTable) -> None:
        self.catalog = catalog
        self.throughput = throughput
        self._store: str | None = None

    def plan(
        self,
        work: Workload,
        *,
        currency: str = "USD",
        budget: float | None = None,
        providers: list[str] | None = None,
        gpus: list[str] | None = None,
        store: str | None = None,
    ) -> Plan:
        work.check()
        self._store = self._check_store(store)
        currency = self.catalog.rates.check(currency)
        self.throughput.check_family(work.family)
        if budget is not None:
            _bounded("--budget", budget, 0, 1e12)
        wanted_providers = self._check_providers(providers)
        wanted_gpus = {self.catalog.find_gpu(g) for g in gpus} if gpus else None
        rows = [
            self._row(offer, g, work, currency, budget)
            for offer in self.catalog.offers
            if offer.provider in wanted_providers
            for g in offer.gpus
            if wanted_gpus is None or g.gpu in wanted_gpus
        ]
        if not rows:
            raise BadRequest("no catalog offer matches the --provider/--gpu filter")
        rows.sort(
            key=lambda r: (
                not r.fits,
                r.total is None,
                r.total if r.total is not None else 0.0,
                r.price_per_hour,
            )
        )
        notes = [
            "Prices move: figures carry their date and source; verify before you rent.",
            "Hugging Face Hub stores 100 GB of private files free (hub-docs, 2026-08).",
            "Time per image scales the table by steps and pixels; sdcloud replaces table figures "
            "with your own measured runs.",
        ]
        if currency != "USD":
            rate = self.catalog.rates.per_usd[currency]
            notes.append(f"Dollar prices converted at {rate:g} {currency}/USD (--jpy-per-usd to change).")
        if self._store:
            notes.append(f"Storage priced as {self._store} for every row (--store).")
        return Plan(currency, work, budget, rows, notes, store=self._store)

    def _check_store(self, store: str | None) -> str | None:
        if store is None:
            return None
        sid = STORE_ALIASES.get(store.lower(), store.lower())
        if sid not in self.catalog.storage:
            known = sorted({*STORE_ALIASES, *self.catalog.storage})
            raise BadRequest(f"unknown --store {store!r}; use one of {', '.join(known)}")
        return sid

    def _check_providers(self, providers: list[str] | None) -> set[str]:
        known = set(self.catalog.providers)
        if not providers:
            return known
        wanted = {p.lower() for p in providers}
        unknown = sorted(wanted - known)
        if unknown:
            raise BadRequest(f"unknown provider {unknown[0]!r}; known providers: {', '.join(sorted(known))}")
        return wanted

    # One offer x GPU --------------------------------------------------------------------
    def _row(self, offer: Offer, gpu: GpuOffer, work: Workload, cur: str, budget: float | None) -> PlanRow:
        rates = self.catalog.rates
        notes = list(offer.notes)
        per_image = self.throughput.seconds_per_image(
            work.family, gpu.gpu, work.steps, work.width, work.height
        )
        train = training_hours(self.throughput, work, gpu.gpu)
        hours: float | None
        if per_image is None:
            hours = None if work.images else work.train_hours
            if work.images:
                notes.insert(0, f"no {work.family} throughput figure for {gpu.gpu}: GPU-hours unknown")
        else:
            hours = work.images * per_image[0] / 3600 + work.train_hours
        if train is None:
            hours = None
            notes.insert(0, f"no {work.family} throughput figure for {gpu.gpu}: training time unknown")
        elif work.train_steps and hours is not None:
            hours += train[0]
            notes.insert(0, f"LoRA training on {gpu.gpu}: {train[0] * 60 / work.train_runs:,.0f} min per run "
                            f"({work.train_steps} steps, batch {work.train_batch}, {work.train_side}px)")
        fee = rates.convert(offer.monthly_fee, cur)
        storage_cost, storage_fits, storage_note = self._storage(offer, work.storage_gb, cur)
        if storage_note:
            notes.append(storage_note)
        fits = storage_fits
        cap = offer.max_gpu_hours_per_month
        if hours is not None and cap is not None and hours > cap:
            fits = False
            notes.insert(0, f"needs {hours:,.1f} GPU-hours; this plan allows {cap:g} a month")
        if hours is not None and hours > HOURS_PER_MONTH:
            notes.insert(0, f"{hours:,.0f} GPU-hours is more than one GPU can run in a month")
        if offer.banned:
            fits = False
            notes.insert(0, f"not allowed: {offer.banned}")
        if offer.preemptible:
            notes.append("preemptible: can be stopped at any time")
        compute = None if hours is None else self._compute_cost(offer, gpu, hours, cur)
        total = None if compute is None else fee + compute + (storage_cost or 0.0)
        row = PlanRow(
            offer=offer.id,
            provider=offer.provider,
            plan=offer.plan,
            gpu=gpu.gpu,
            vram_gb=self.catalog.vram_gb.get(gpu.gpu),
            billing=offer.billing,
            price_per_hour=self.catalog.offer_hourly(offer, gpu, cur),
            seconds_per_image=None if per_image is None else per_image[0],
            gpu_hours=hours,
            fee=fee,
            compute_cost=compute,
            storage_cost=storage_cost,
            total=total,
            fits=fits,
            throughput_source="" if per_image is None else per_image[1],
            notes=notes,
            date=gpu.date or offer.date,
            source=gpu.source or offer.source,
        )
        if budget is not None and per_image is not None and not offer.banned:
            row.images_for_budget = self._images_for(
                offer, gpu, budget - fee - (storage_cost or 0.0), work, per_image[0], cur
            )
        return row

    def _compute_cost(self, offer: Offer, gpu: GpuOffer, hours: float, cur: str) -> float:
        if offer.billing == "compute_units":
            needed = hours * float(gpu.cu_per_hour or 0.0)
            extra = max(0.0, needed - offer.included_cu)
            packs = math.ceil(round(extra / offer.cu_pack_size, 9))
            return packs * self.catalog.rates.convert(offer.cu_pack_price, cur)
        return hours * self.catalog.rates.convert(gpu.price or {}, cur)

    def _gpu_hours_for(self, offer: Offer, gpu: GpuOffer, money: float, cur: str) -> float:
        """GPU-hours that ``money`` buys beyond the fee (inf for a free GPU)."""
        if offer.billing == "compute_units":
            pack = self.catalog.rates.convert(offer.cu_pack_price, cur)
            packs = math.floor(money / pack) if pack > 0 else 0
            units = offer.included_cu + packs * offer.cu_pack_size
            rate = float(gpu.cu_per_hour or 0.0)
            return units / rate if rate > 0 else math.inf
        price = self.catalog.rates.convert(gpu.price or {}, cur)
        return money / price if price > 0 else math.inf

    def _images_for(
        self, offer: Offer, gpu: GpuOffer, money: float, work: Workload, per_image: float, cur: str
    ) -> int:
        if money < 0:
            return 0
        hours = self._gpu_hours_for(offer, gpu, money, cur) - work.train_hours
        cap = offer.max_gpu_hours_per_month
        if cap is not None:
            hours = min(hours, cap - work.train_hours)
        if math.isinf(hours):
            hours = HOURS_PER_MONTH - work.train_hours  # free GPU: bounded by the clock, not money
        if hours <= 0 or per_image <= 0:
            return 0
        return int(hours * 3600 / per_image)

    def _storage(self, offer: Offer, gb: float, cur: str) -> tuple[float | None, bool, str]:
        """(monthly cost or None if unpriced, fits, note)."""
        sid = self._store or offer.storage
        if sid is None:
            return 0.0, True, ""
        opt: StorageOption = self.catalog.storage[sid]
        rates = self.catalog.rates
        if opt.max_gb is not None and gb > opt.max_gb:
            return None, False, f"needs {gb:g} GB of storage; this plan has at most {opt.max_gb:g} GB"
        if opt.kind == "tiers":
            for size, price in opt.tiers:
                if gb <= size:
                    return rates.convert(price, cur), True, ""
            return None, False, f"needs {gb:g} GB; the largest {opt.id} tier is {opt.tiers[-1][0]:g} GB"
        over = max(0.0, gb - opt.included_gb)
        if opt.kind == "per_gb_month" or (opt.kind == "included" and opt.price):
            return over * rates.convert(opt.price, cur), True, ""
        if opt.kind == "included":
            return 0.0, True, ""
        return None, True, opt.note if gb > 0 else ""


# --explain ---------------------------------------------------------------------------------
def explain(plan: Plan, catalog: PriceCatalog, offer_id: str) -> list[str]:
    """How each row of one offer was computed, figure by figure, with dates and sources."""
    offers = {o.id: o for o in catalog.offers}
    offer = offers.get(offer_id) or offers.get(offer_id.lower())
    if offer is None:
        raise BadRequest(f"unknown offer {offer_id!r} for --explain; offers: {', '.join(sorted(offers))}")
    rows = [r for r in plan.rows if r.offer == offer.id]
    if not rows:
        raise BadRequest(f"offer {offer.id!r} has no row under this --provider/--gpu filter")
    cur, w = plan.currency, plan.workload
    rates = catalog.rates
    money = _money_fmt(cur)
    out = [f"{offer.id}: {offer.provider} {offer.plan} ({offer.billing}; {offer.source or '?'}, "
           f"{offer.date or 'undated'})"]
    sid = plan.store or offer.storage
    for r in rows:
        gpu = next(g for g in offer.gpus if g.gpu == r.gpu)
        out.append(f"\n  {r.gpu}" + (f" ({gpu.instance})" if gpu.instance else "") + f": total {money(r.total)}")
        if r.seconds_per_image is None:
            out.append(f"    time per image: unknown (no {w.family} figure for {r.gpu})")
        else:
            out.append(f"    time per image: {r.seconds_per_image:.2f} s = {w.steps} steps at {w.width}x{w.height} "
                       f"from the {w.family} table ({r.throughput_source})")
        if r.gpu_hours is not None:
            per = "?" if r.seconds_per_image is None else f"{r.seconds_per_image:.2f}"
            out.append(f"    GPU-hours: {w.images:,} images x {per} s / 3600 + {w.train_hours:g} h training "
                       f"= {r.gpu_hours:,.2f} h")
        if offer.billing == "compute_units":
            pack = rates.convert(offer.cu_pack_price, cur)
            out.append(f"    price/h: {gpu.cu_per_hour:g} CU/h x {money(pack)} / {offer.cu_pack_size:g} CU "
                       f"= {money(r.price_per_hour)}")
            if r.gpu_hours is not None:
                need = r.gpu_hours * float(gpu.cu_per_hour or 0)
                out.append(f"    compute: {need:,.1f} CU needed, {offer.included_cu:g} included, extra in packs "
                           f"of {offer.cu_pack_size:g} = {money(r.compute_cost)}")
        else:
            out.append(f"    price/h: {money(r.price_per_hour)} ({gpu.source or offer.source or '?'}, "
                       f"{gpu.date or offer.date or 'undated'})")
            if r.gpu_hours is not None:
                out.append(f"    compute: {r.gpu_hours:,.2f} h x {money(r.price_per_hour)} = {money(r.compute_cost)}")
        out.append(f"    monthly fee: {money(r.fee)}")
        out.append("    storage: " + _explain_storage(catalog, sid, w.storage_gb, r.storage_cost, money))
        parts = [money(r.fee), money(r.compute_cost), money(r.storage_cost)]
        fits = "" if r.fits else " (does not fit)"
        out.append(f"    total: fee + compute + storage = {' + '.join(parts)} = {money(r.total)}{fits}")
    if offer.notes:
        out.append("\n  notes: " + "; ".join(offer.notes))
    return out


def _explain_storage(catalog: PriceCatalog, sid: str | None, gb: float, cost: float | None,
                     money: Any) -> str:
    if sid is None:
        return "none needed"
    opt = catalog.storage[sid]
    how = {
        "tiers": "smallest tier that holds it",
        "per_gb_month": f"({gb:g} GB - {opt.included_gb:g} GB free) x price per GB-month",
        "included": f"{opt.included_gb:g} GB included" + (", more per GB-month" if opt.price else ""),
        "unpriced": "not priced (varies)",
    }[opt.kind]
    return f"{gb:g} GB on {sid}: {how} = {money(cost)} ({opt.source or '?'}, {opt.date or 'undated'})"


def _money_fmt(cur: str) -> Any:
    def fmt(value: float | None) -> str:
        if value is None or not math.isfinite(value):
            return "-"
        if cur == "JPY":
            return f"¥{value:,.0f}"
        return f"${value:,.2f}" if cur == "USD" else f"{value:,.2f} {cur}"

    return fmt
