"""The cost catalog: plans, GPUs, prices, compute units, storage, with the date and source
of each figure.

The packaged data lives in ``cloud/data/prices.json`` and ``cloud/data/throughput.json``.
A user file (JSON, same shape, any subset) overrides or extends it: dictionaries merge key by
key, offers merge by ``id`` (``{"id": "vast-ondemand", "remove": true}`` drops one), and a
``"throughput"`` key overrides the throughput table. Every value is checked after merging,
and a bad one is reported with the file and the field path (``offers[colab-pro].cu_pack.size``).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import json.decoder
import json.scanner
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from sdcloud.errors import BadRequest

BILLING_KINDS = ("hourly", "compute_units")
STORAGE_KINDS = ("tiers", "per_gb_month", "included", "unpriced")


# Money ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rates:
    """Units of each currency per US dollar (``{"USD": 1, "JPY": 150}``)."""

    per_usd: Mapping[str, float]

    @property
    def currencies(self) -> tuple[str, ...]:
        return tuple(sorted(self.per_usd))

    def check(self, currency: str) -> str:
        code = currency.upper()
        if code not in self.per_usd:
            raise BadRequest(
                f"unknown currency {currency!r}; use one of {', '.join(self.currencies)} "
                "(or add its rate under currency.rates_per_usd in your catalog file)"
            )
        return code

    def convert(self, price: Mapping[str, float], currency: str) -> float:
        """The price in ``currency``: the catalog's own figure when it has one (regional prices
        are real prices, not conversions), else converted from dollars or the first currency given."""
        code = self.check(currency)
        if code in price:
            return float(price[code])
        src = "USD" if "USD" in price else next(iter(price))
        return float(price[src]) / self.per_usd[self.check(src)] * self.per_usd[code]


Price = Mapping[str, float]


# Catalog entries ------------------------------------------------------------------------
@dataclass(frozen=True)
class StorageOption:
    id: str
    kind: str
    price: Price = field(default_factory=dict)  # per GB-month for per_gb_month
    tiers: tuple[tuple[float, Price], ...] = ()  # (GB, monthly price), ascending
    included_gb: float = 0.0
    max_gb: float | None = None
    note: str = ""
    date: str = ""
    source: str = ""


@dataclass(frozen=True)
class GpuOffer:
    """One GPU in one offer: an hourly price, or compute units per hour."""

    gpu: str
    price: Price | None = None
    cu_per_hour: float | None = None
    date: str = ""
    source: str = ""
    instance: str = ""  # the machine type behind the price (g4dn.xlarge), where one is named


@dataclass(frozen=True)
class Offer:
    id: str
    provider: str
    plan: str
    billing: str
    gpus: tuple[GpuOffer, ...]
    monthly_fee: Price
    storage: str | None
    included_cu: float = 0.0
    cu_pack_size: float = 0.0
    cu_pack_price: Price = field(default_factory=dict)
    preemptible: bool = False
    banned: str | None = None  # why sdcloud must not be used there (a platform's terms)
    max_gpu_hours_per_month: float | None = None
    notes: tuple[str, ...] = ()
    date: str = ""
    source: str = ""


@dataclass(frozen=True)
class PriceCatalog:
    rates: Rates
    vram_gb: Mapping[str, float]
    storage: Mapping[str, StorageOption]
    offers: tuple[Offer, ...]
    throughput: Mapping[str, Any]
    sources: tuple[str, ...] = ()

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(sorted({o.provider for o in self.offers}))

    @property
    def gpu_names(self) -> tuple[str, ...]:
        return tuple(sorted({g.gpu for o in self.offers for g in o.gpus}))

    def find_gpu(self, name: str) -> str:
        """Canonical GPU name for ``name`` (case and spaces ignored), or a clear error."""
        wanted = _norm(name)
        for gpu in (*self.gpu_names, *self.vram_gb):
            if _norm(gpu) == wanted:
                return gpu
        raise BadRequest(f"unknown GPU {name!r}; known GPUs: {', '.join(self.gpu_names)}")

    def gpu_for_device_name(self, device_name: str) -> str | None:
        """Map an ``nvidia-smi`` name (``NVIDIA A100-SXM4-80GB``) to a catalog GPU, if any."""
        text = _norm(device_name)
        best: str | None = None
        for gpu in sorted({*self.gpu_names, *self.vram_gb}, key=len):
            parts = _norm(gpu).split("-")
            if all(p in text for p in parts):
                best = gpu  # longest match wins (A100-80GB over A100)
        return best

    def offer_hourly(self, offer: Offer, gpu: GpuOffer, currency: str) -> float:
        if offer.billing == "compute_units":
            per_cu = self.rates.convert(offer.cu_pack_price, currency) / offer.cu_pack_size
            return per_cu * float(gpu.cu_per_hour or 0.0)
        return self.rates.convert(gpu.price or {}, currency)


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum() or ch == "-").replace("nvidia", "")


# Loading --------------------------------------------------------------------------------
def _packaged(name: str, *, lined: bool = False) -> dict[str, Any]:
    text = resources.files("sdcloud.cloud").joinpath("data", name).read_text(encoding="utf-8")
    return _lined_decoder().decode(text) if lined else json.loads(text)


# Every figure dated and sourced ----------------------------------------------------------
_DATE_RE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")


def check_date(value: Any) -> str | None:
    """Why ``value`` is not a usable catalog date (YYYY, YYYY-MM or YYYY-MM-DD, not in the
    future), or None when it is."""
    if not isinstance(value, str):
        return f"must be a string like 2026-09-20, got {value!r}"
    m = _DATE_RE.match(value.strip())
    if not m:
        return f"bad date {value!r}; use YYYY, YYYY-MM or YYYY-MM-DD"
    year, month, day = int(m.group(1)), int(m.group(2) or 1), int(m.group(3) or 1)
    try:
        when = datetime.date(year, month, day)
    except ValueError:
        return f"bad date {value!r}: no such day"
    if when > datetime.date.today() + datetime.timedelta(days=1):
        return f"bad date {value!r}: it is in the future"
    return None


def _line(obj: Any, key: str) -> str:
    lines = getattr(obj, "lines", None)
    return f" line {lines[key]}" if lines and key in lines else ""


def check_figures(data: Mapping[str, Any], base: Mapping[str, Any], where: str) -> None:
    """Refuse a catalog file whose figures lack a price, a date or a source, naming the line
    and the field. ``base`` is the catalog the file is merged over: a GPU or offer already
    there keeps its price, date and source unless the file changes them."""
    _check_dates(data, where, "")
    base_offers = {o.get("id"): o for o in base.get("offers", []) if isinstance(o, Mapping)}
    offers = data.get("offers", [])
    for entry in offers if isinstance(offers, list) else []:
        if not isinstance(entry, Mapping) or entry.get("remove"):
            continue
        oid = entry.get("id")
        old = base_offers.get(oid, {})
        field = f"offers[{oid}]"
        dated = bool(entry.get("date") or old.get("date"))
        sourced = bool(entry.get("source") or old.get("source"))
        gpus = entry.get("gpus")
        billing = entry.get("billing", old.get("billing"))
        if isinstance(gpus, Mapping) and billing != "compute_units":
            old_gpus = old.get("gpus", {})
            for gpu, g in gpus.items():
                if not isinstance(g, Mapping):
                    continue
                if "price" not in g and gpu not in old_gpus:
                    raise BadRequest(f"{where}{_line(gpus, gpu)}: {field}.gpus.{gpu}.price is missing "
                                     '(e.g. "price": {"USD": 0.39})')
                if "price" in g and not isinstance(g["price"], Mapping):
                    raise BadRequest(f"{where}{_line(g, 'price')}: {field}.gpus.{gpu}.price must be an object "
                                     f'like {{"USD": 0.39}}, got {g["price"]!r}')
                if not (dated or g.get("date")):
                    raise BadRequest(f"{where}{_line(gpus, gpu)}: {field}.gpus.{gpu}.date is missing: every "
                                     "price needs the date it was read (on the GPU or on the offer)")
                if not (sourced or g.get("source")):
                    raise BadRequest(f"{where}{_line(gpus, gpu)}: {field}.gpus.{gpu}.source is missing: every "
                                     "price needs where it was read (on the GPU or on the offer)")
        elif oid not in base_offers and not (dated and sourced):
            missing = "date" if not dated else "source"
            raise BadRequest(f"{where}{_line(entry, 'id')}: {field}.{missing} is missing: every price needs "
                             "its date and source")


def _check_dates(node: Any, where: str, path: str) -> None:
    if isinstance(node, Mapping):
        for key, value in node.items():
            field = f"{path}.{key}" if path else str(key)
            if key == "date":
                why = check_date(value)
                if why:
                    raise BadRequest(f"{where}{_line(node, key)}: {field}: {why}")
            else:
                _check_dates(value, where, field)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            label = item.get("id", i) if isinstance(item, Mapping) else i
            _check_dates(item, where, f"{path}[{label}]")


class LinedDict(dict):
    """A JSON object that remembers the line each of its keys is on (for error messages)."""

    lines: dict[str, int]


def _lined_decoder() -> json.JSONDecoder:
    """A decoder whose objects are :class:`LinedDict` (the pure-Python scanner, which lets us
    see where each object starts; the catalog is small, so speed does not matter)."""
    decoder = json.JSONDecoder()

    def parse_object(s_and_end: tuple[str, int], *args: Any, **kwargs: Any) -> tuple[Any, int]:
        text, start = s_and_end
        obj, end = json.decoder.JSONObject(s_and_end, *args, **kwargs)
        lined = LinedDict(obj)
        lined.lines = {}
        pos = start
        for key in obj:
            found = text.find(json.dumps(key, ensure_ascii=False), pos, end)
            if found < 0:
                found = text.find(json.dumps(key), pos, end)
            if found >= 0:
                pos = found
            lined.lines[key] = text.count("\n", 0, pos) + 1
        return lined, end

    decoder.parse_object = parse_object  # type: ignore[method-assign]
    decoder.scan_once = json.scanner.py_make_scanner(decoder)  # type: ignore[attr-defined]
    return decoder


def read_json_file(path: Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadRequest(f"catalog file {path} not found") from None
    except OSError as exc:
        raise BadRequest(f"catalog file {path} cannot be read: {exc.strerror}") from None
    try:
        data = _lined_decoder().decode(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"catalog file {path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    if not isinstance(data, dict):
        raise BadRequest(f"catalog file {path}: the top level must be a JSON object")
    return data


def merge(base: dict[str, Any], override: Mapping[str, Any], *, where: str = "catalog") -> dict[str, Any]:
    """Merge ``override`` into a copy of ``base``: dicts key by key, ``offers`` by id."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if key == "offers":
            out["offers"] = _merge_offers(out.get("offers", []), value, where)
        elif isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value, where=f"{where}.{key}")
        else:
            out[key] = copy.deepcopy(value)
    return out


def _merge_offers(base: list[Any], override: Any, where: str) -> list[Any]:
    if not isinstance(override, list):
        raise BadRequest(f"{where}: 'offers' must be a list of objects with an 'id'")
    offers = {o["id"]: o for o in base}
    for i, entry in enumerate(override):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("id"), str):
            raise BadRequest(f"{where}: offers[{i}] must be an object with a string 'id'")
        oid = entry["id"]
        if entry.get("remove"):
            offers.pop(oid, None)
        elif oid in offers:
            offers[oid] = merge(offers[oid], entry, where=f"{where}.offers[{oid}]")
        else:
            offers[oid] = copy.deepcopy(dict(entry))
    return list(offers.values())


def load_price_catalog(
    extra_files: Iterable[Path] = (), *, rates: Mapping[str, float] | None = None
) -> PriceCatalog:
    """The packaged catalog, merged with each file in ``extra_files`` in order, then checked.

    ``rates`` (e.g. ``{"JPY": 155}``) replaces conversion rates, as ``--jpy-per-usd`` does.
    """
    data = _packaged("prices.json")
    data["throughput"] = _packaged("throughput.json")
    sources = ["packaged"]
    for path in extra_files:
        user = read_json_file(Path(path))
        check_figures(user, data, f"catalog file {path}")
        data = merge(data, user, where=f"catalog file {path}")
        sources.append(str(path))
    if rates:
        data = merge(data, {"currency": {"rates_per_usd": dict(rates)}}, where="--jpy-per-usd")
    where = "catalog" if len(sources) == 1 else f"catalog (with {', '.join(sources[1:])})"
    return dataclasses.replace(_parse(data, where), sources=tuple(sources))


# Checking -------------------------------------------------------------------------------
def _positive(value: Any, what: str, *, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (value > 0 or (allow_zero and value == 0)):
        return float(value)
    need = "a number >= 0" if allow_zero else "a positive number"
    raise BadRequest(f"{what} must be {need}, got {value!r}")


def _obj(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise BadRequest(f"{what} must be an object, got {value!r}")
    return value


def _text(value: Any, what: str, default: str | None = None) -> str:
    if value is None and default is not None:
        return default
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{what} must be a non-empty string, got {value!r}")
    return value


def _price(value: Any, what: str, rates: Rates) -> dict[str, float]:
    obj = _obj(value, what)
    if not obj:
        raise BadRequest(f'{what} must give at least one currency, e.g. {{"USD": 0.39}}')
    out: dict[str, float] = {}
    for code, amount in obj.items():
        if code.upper() not in rates.per_usd:
            raise BadRequest(f"{what}: unknown currency {code!r}; known: {', '.join(rates.currencies)}")
        out[code.upper()] = _positive(amount, f"{what}.{code}", allow_zero=True)
    return out


def _parse(data: Mapping[str, Any], where: str) -> PriceCatalog:
    cur = _obj(data.get("currency"), f"{where}: currency")
    per_usd = _obj(cur.get("rates_per_usd"), f"{where}: currency.rates_per_usd")
    rates = Rates(
        {str(k).upper(): _positive(v, f"{where}: currency.rates_per_usd.{k}") for k, v in per_usd.items()}
    )
    if "USD" not in rates.per_usd:
        raise BadRequest(f"{where}: currency.rates_per_usd must include USD")
    vram = {
        name: _positive(_obj(g, f"{where}: gpus.{name}").get("vram_gb"), f"{where}: gpus.{name}.vram_gb")
        for name, g in _obj(data.get("gpus", {}), f"{where}: gpus").items()
    }
    storage = {
        sid: _parse_storage(sid, s, f"{where}: storage.{sid}", rates)
        for sid, s in _obj(data.get("storage", {}), f"{where}: storage").items()
    }
    raw_offers = data.get("offers")
    if not isinstance(raw_offers, list):
        raise BadRequest(f"{where}: offers must be a list")
    offers = tuple(
        _parse_offer(o, f"{where}: offers[{o.get('id', i) if isinstance(o, Mapping) else i}]", rates, storage)
        for i, o in enumerate(raw_offers)
    )
    throughput = _obj(data.get("throughput", {}), f"{where}: throughput")
    _check_throughput(throughput, f"{where}: throughput")
    return PriceCatalog(rates, vram, storage, offers, throughput)


def _parse_storage(sid: str, raw: Any, what: str, rates: Rates) -> StorageOption:
    s = _obj(raw, what)
    kind = s.get("kind")
    if kind not in STORAGE_KINDS:
        raise BadRequest(f"{what}.kind must be one of {', '.join(STORAGE_KINDS)}, got {kind!r}")
    tiers: list[tuple[float, Price]] = []
    if kind == "tiers":
        raw_tiers = s.get("tiers")
        if not isinstance(raw_tiers, list) or not raw_tiers:
            raise BadRequest(f"{what}.tiers must be a non-empty list")
        for i, t in enumerate(raw_tiers):
            t = _obj(t, f"{what}.tiers[{i}]")
            tiers.append(
                (
                    _positive(t.get("gb"), f"{what}.tiers[{i}].gb"),
                    _price(t.get("price"), f"{what}.tiers[{i}].price", rates),
                )
            )
        tiers.sort(key=lambda t: t[0])
    priced = kind == "per_gb_month" or (kind == "included" and s.get("price") is not None)
    price = _price(s.get("price"), f"{what}.price", rates) if priced else {}
    max_gb = s.get("max_gb")
    return StorageOption(
        id=sid,
        kind=kind,
        price=price,
        tiers=tuple(tiers),
        included_gb=_positive(s.get("included_gb", 0), f"{what}.included_gb", allow_zero=True),
        max_gb=None if max_gb is None else _positive(max_gb, f"{what}.max_gb"),
        note=str(s.get("note", "")),
        date=str(s.get("date", "")),
        source=str(s.get("source", "")),
    )


def _parse_offer(raw: Any, what: str, rates: Rates, storage: Mapping[str, StorageOption]) -> Offer:
    o = _obj(raw, what)
    oid = _text(o.get("id"), f"{what}.id")
    billing = o.get("billing")
    if billing not in BILLING_KINDS:
        raise BadRequest(f"{what}.billing must be one of {', '.join(BILLING_KINDS)}, got {billing!r}")
    sid = o.get("storage")
    if sid is not None and sid not in storage:
        raise BadRequest(f"{what}.storage names {sid!r}, which is not under 'storage'")
    gpus: list[GpuOffer] = []
    if billing == "compute_units":
        for gpu, rate in _obj(o.get("cu_per_hour"), f"{what}.cu_per_hour").items():
            gpus.append(
                GpuOffer(
                    gpu,
                    cu_per_hour=_positive(rate, f"{what}.cu_per_hour.{gpu}"),
                    date=str(o.get("date", "")),
                    source=str(o.get("source", "")),
                )
            )
        pack = _obj(o.get("cu_pack"), f"{what}.cu_pack")
        pack_size = _positive(pack.get("size"), f"{what}.cu_pack.size")
        pack_price = _price(pack.get("price"), f"{what}.cu_pack.price", rates)
    else:
        for gpu, g in _obj(o.get("gpus"), f"{what}.gpus").items():
            g = _obj(g, f"{what}.gpus.{gpu}")
            gpus.append(
                GpuOffer(
                    gpu,
                    price=_price(g.get("price"), f"{what}.gpus.{gpu}.price", rates),
                    date=str(g.get("date", o.get("date", ""))),
                    source=str(g.get("source", o.get("source", ""))),
                    instance=str(g.get("instance", "")),
                )
            )
        pack_size, pack_price = 0.0, {}
    if not gpus:
        raise BadRequest(f"{what} lists no GPUs")
    notes = o.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise BadRequest(f"{what}.notes must be a list of strings")
    cap = o.get("max_gpu_hours_per_month")
    return Offer(
        id=oid,
        provider=_text(o.get("provider"), f"{what}.provider"),
        plan=_text(o.get("plan"), f"{what}.plan"),
        billing=billing,
        gpus=tuple(gpus),
        monthly_fee=_price(o.get("monthly_fee", {"USD": 0}), f"{what}.monthly_fee", rates),
        storage=sid,
        included_cu=_positive(o.get("included_cu", 0), f"{what}.included_cu", allow_zero=True),
        cu_pack_size=pack_size,
        cu_pack_price=pack_price,
        preemptible=bool(o.get("preemptible", False)),
        banned=None if o.get("banned") is None else _text(o.get("banned"), f"{what}.banned"),
        max_gpu_hours_per_month=None if cap is None else _positive(cap, f"{what}.max_gpu_hours_per_month"),
        notes=tuple(notes),
        date=str(o.get("date", "")),
        source=str(o.get("source", "")),
    )


def _check_throughput(raw: Mapping[str, Any], what: str) -> None:
    families = _obj(raw.get("families", {}), f"{what}.families")
    for fam, f in families.items():
        f = _obj(f, f"{what}.families.{fam}")
        for dim in ("width", "height"):
            _positive(f.get(dim), f"{what}.families.{fam}.{dim}")
        for gpu, g in _obj(f.get("gpus", {}), f"{what}.families.{fam}.gpus").items():
            _positive(
                _obj(g, f"{what}.families.{fam}.gpus.{gpu}").get("it_s"),
                f"{what}.families.{fam}.gpus.{gpu}.it_s",
            )
