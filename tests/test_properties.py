"""Property tests (hypothesis) over arbitrary Unicode and random arrival patterns:

* Skycore links: build → parse → verify round-trips for any parameter names and values, the fast
  vectorised builder agrees with the reference, and a changed value no longer verifies;
* CSV: a segment written with any text, read by the source, exported and read back, keeps every
  value (up to the documented formula neutralisation);
* the limiter holds its in-flight and sliding-window limits when waiters give up (time out) at
  random moments — what a vendor timeout does to queued requests (virtual time, exact).
"""

from __future__ import annotations

import asyncio
import csv
import tempfile
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_exports import reference_neutralise
from test_limiter import allowed_per_window, max_in_window, run_virtual

from passflow.exports import AttributeExport
from passflow.providers.http.limiter import RateLimiter
from passflow.providers.skycore.links import (
    LinkRecipe,
    all_recipes,
    build_link,
    build_links,
    parse_link,
    verify_link,
)
from passflow.sources import read_csv_chunks

BASE = "https://d2c.skycore.com/wallet/gc/5f2a9c1e7b"
# Any Unicode scalar value: surrogates cannot be encoded to UTF-8 (nor typed into a CRM).
TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=30)
KEYS = st.text(alphabet=st.characters(exclude_categories=("Cs",)), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(
    params=st.lists(st.tuples(KEYS, TEXT), min_size=1, max_size=5),
    salt=st.one_of(st.none(), st.text(alphabet=st.characters(exclude_categories=("Cs",)), min_size=1, max_size=8)),
    recipe=st.sampled_from(all_recipes(True)),
)
def test_link_round_trip_any_unicode(params: list[tuple[str, str]], salt: str | None, recipe: LinkRecipe) -> None:
    link = build_link(BASE, params, salt=salt, recipe=recipe)
    assert link.isascii() and not any(c in link for c in " \n\r\t#\"<>"), "the link must survive a click"
    parsed = parse_link(link)
    assert parsed.base == BASE and parsed.params == params
    assert verify_link(link, salt=salt, recipe=recipe)
    fast = build_links(BASE, [(k, pd.Series([v], dtype="str")) for k, v in params], salt=salt, recipe=recipe)
    assert fast.links.iloc[0] == link
    # tampering with any value breaks the checksum
    key, value = params[0]
    tampered = build_link(BASE, [(key, value + "x"), *params[1:]], salt=salt, recipe=recipe)
    forged = tampered.rsplit("&checksum=", 1)[0] + "&checksum=" + parsed.checksum
    assert not verify_link(forged, salt=salt, recipe=recipe)


CELL = st.text(alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=20)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(CELL, min_size=1, max_size=25))
def test_csv_read_export_read_keeps_values(values: list[str]) -> None:
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "segment.csv"
        with src.open("w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)  # CRLF terminator: a lone CR or LF in a value gets quoted
            w.writerow(["customer_id", "note"])
            w.writerows([f"c{i}", v] for i, v in enumerate(values))
        bad: list = []
        chunks = list(read_csv_chunks(src, encoding="utf-8", delimiter=",", chunk_size=7, malformed=bad))
        assert bad == []
        df = pd.concat(chunks, ignore_index=True)
        assert df["note"].tolist() == values  # the source keeps every value as written
        out = df.assign(pass_id="P", pass_link="L", pass_gendate="2026-01-01T00:00:00Z")
        with AttributeExport(
            kind="moengage", directory=Path(d) / "out", campaign="prop", provider="skycore",
            run_id="r1234567", extra_columns=["note"],
        ) as ex:
            for start in range(0, len(out), 7):
                ex.write(out.iloc[start : start + 7])
        [path] = (Path(d) / "out").iterdir()
        with path.open(encoding="utf-8", newline="") as f:
            back = list(csv.DictReader(f))
    assert [r["ID"] for r in back] == [f"c{i}" for i in range(len(values))]
    assert [r["note"] for r in back] == [reference_neutralise(v) for v in values]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rate=st.floats(min_value=0.5, max_value=200.0, allow_nan=False),
    cap=st.integers(min_value=1, max_value=8),
    jobs=st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=2.0),  # arrival
            st.floats(min_value=0.0, max_value=0.3),  # request duration
            st.one_of(st.none(), st.floats(min_value=0.0, max_value=1.0)),  # gives up waiting after
        ),
        min_size=1,
        max_size=60,
    ),
)
def test_limiter_holds_limits_when_waiters_time_out(
    rate: float, cap: int, jobs: list[tuple[float, float, float | None]]
) -> None:
    starts: list[float] = []
    peak = 0

    async def main() -> RateLimiter:
        nonlocal peak
        loop = asyncio.get_running_loop()
        limiter = RateLimiter(cap, rate, clock=loop.time)
        in_flight = 0

        async def job(at: float, duration: float, patience: float | None) -> None:
            nonlocal in_flight, peak
            await asyncio.sleep(at)
            try:
                await asyncio.wait_for(limiter.acquire(), patience)
            except TimeoutError:
                return  # gave up in the queue: took no start, holds no slot
            try:
                starts.append(loop.time())
                in_flight += 1
                peak = max(peak, in_flight)
                await asyncio.sleep(duration)
            finally:
                in_flight -= 1
                limiter.release()

        await asyncio.gather(*(job(*j) for j in jobs))
        return limiter

    limiter = run_virtual(main)
    assert limiter.in_flight == 0 and limiter.waiting == 0
    assert peak <= cap and limiter.max_in_flight_seen <= cap
    assert limiter.started == len(starts)
    width, allowed = allowed_per_window(rate)
    assert max_in_window(starts, width) <= allowed
    if all(p is None for _, _, p in jobs):
        assert len(starts) == len(jobs)
