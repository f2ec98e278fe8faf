"""Build the sample SQLite CRM database (data/crm.db) used by data/campaigns/skycore-sql.toml.

Same as `passflow demo-db`. Usage: python data/make_crm_db.py [--rows N]
"""

import argparse
from pathlib import Path

from passflow.demo import build_crm_db

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--path", type=Path, default=Path(__file__).parent / "crm.db")
    args = parser.parse_args()
    build_crm_db(args.path, rows=args.rows)
    print(f"wrote {args.path}")
