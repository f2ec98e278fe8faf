"""Bundled demo data: a realistic sample segment and a sample SQLite CRM database.

Deterministic (seeded), so tests and docs can rely on the numbers.
"""

from __future__ import annotations

import csv
import random
import sqlite3
import unicodedata
from pathlib import Path

FIRST = [
    "Anna",
    "Jan",
    "Petra",
    "Tomáš",
    "Lucie",
    "Marek",
    "Eva",
    "Jiří",
    "Zoë",
    "Liam",
    "Olivia",
    "Noah",
    "Emma",
    "José",
    "Chloé",
    "Søren",
    "Mia",
    "Lukas",
    "Aoife",
    "Björn",
    "Renée",
    "Ana",
    "John",
    "Mary",
]
LAST = [
    "Novák",
    "Svoboda",
    "Dvořák",
    "Smith",
    "Johnson",
    "Müller",
    "García",
    "O'Brien",
    "Nguyen",
    "Kowalski",
    "Černá",
    "Brown",
    "Rossi",
    "Dubois",
    "Larsen",
    "Fischer",
]
TIERS = ["bronze", "silver", "gold"]
COLUMNS = [
    "customer_id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "tier",
    "loyalty_points",
    "signup_date",
]


def sample_customers(rows: int, *, seed: int = 42, with_bad_rows: bool = True) -> list[dict[str, str]]:
    rnd = random.Random(seed)
    out = []
    for i in range(1, rows + 1):
        first, last = rnd.choice(FIRST), rnd.choice(LAST)
        local = f"{first}.{last}".lower().replace("'", "").replace(" ", "")
        local = unicodedata.normalize("NFKD", local).encode("ascii", "ignore").decode()
        email = f"{local}{i}@example.com" if i % 7 else f"{local}+wallet{i}@example.com"
        # numbers phonenumbers calls valid (Czech 601-608 mobiles, UK 7400 mobiles): validation agrees
        # with the library, so a made-up range would be rejected. Same random draws as before.
        phone = rnd.choice(["+420 60{} {:03d} {:03d}", "+1 (202) 555-{:04d}", "+44 7400 1{:05d}"])
        if "420" in phone:
            a, b, c = (rnd.randrange(100) for _ in range(3))
            phone = phone.format(1 + a % 8, b, c)
        else:
            phone = phone.format(rnd.randrange(10_000 if "202" in phone else 100_000))
        out.append(
            {
                "customer_id": f"C{i:06d}",
                "first_name": first,
                "last_name": last,
                "email": email,
                "phone": phone,
                "tier": rnd.choice(TIERS),
                "loyalty_points": str(rnd.randrange(0, 5000)),
                "signup_date": f"202{rnd.randrange(0, 6)}-{rnd.randrange(1, 13):02d}-{rnd.randrange(1, 29):02d}",
            }
        )
    if with_bad_rows and rows >= 50:
        out[10]["email"] = "not-an-email"
        out[11]["email"] = "jan@@example.com"
        out[12]["phone"] = "12"
        out[13]["customer_id"] = ""
        out[14]["customer_id"] = out[3]["customer_id"]  # duplicate id
        out[15]["customer_id"] = "C-000016"  # '-' breaks Skycore's pass-id rule
        out[16]["first_name"] = '=HYPERLINK("http://evil.example","click")'  # formula injection attempt
        out[17]["last_name"] = "Ünicode-Ñame 🎉"
        out[18]["email"] = "  Mixed.Case@Example.COM "
        out[19]["phone"] = "(202) 555-0143"  # national format, normalised with the default region
        out[20]["email"] = ""
        out[21]["email"] = "zoë.müller@exämple.cz"  # an internationalised address, valid
    return out


def write_segment_csv(path: Path, rows: int = 300, *, seed: int = 42) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8-sig") as f:  # Excel-style BOM, as analysts' files have
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for i, row in enumerate(sample_customers(rows, seed=seed)):
            w.writerow(row)
            if i == 40:
                f.write("\r\n")  # a blank line, as spreadsheet exports sometimes have


def build_crm_db(path: Path, rows: int = 500, *, seed: int = 7) -> None:
    """A small CRM: `customers` table (the segment source of the SQL example campaign)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    con = sqlite3.connect(path)
    try:
        con.execute(
            "create table customers (customer_id text primary key, first_name text, last_name text, "
            "email text, phone text, tier text, loyalty_points integer, signup_date text, opted_in integer)"
        )
        data = sample_customers(rows, seed=seed, with_bad_rows=False)
        con.executemany(
            "insert into customers values (?,?,?,?,?,?,?,?,?)",
            [
                (
                    r["customer_id"],
                    r["first_name"],
                    r["last_name"],
                    r["email"],
                    r["phone"],
                    r["tier"],
                    int(r["loyalty_points"]),
                    r["signup_date"],
                    int(i % 5 != 0),
                )
                for i, r in enumerate(data)
            ],
        )
        con.commit()
    finally:
        con.close()
