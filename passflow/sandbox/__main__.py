"""``python -m passflow.sandbox``: run the provider sandbox in the foreground.

Prints ``passflow-sandbox listening on <url>`` once it accepts connections (the process runner waits
for that line). Flags override fields of ``--config-json``.
"""

from __future__ import annotations

import argparse

from passflow.sandbox.runner import config_from_json, serve
from passflow.sandbox.state import SandboxConfig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m passflow.sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 = any free port")
    parser.add_argument("--latency-ms", type=float)
    parser.add_argument("--jitter-ms", type=float)
    parser.add_argument("--max-in-flight", type=int, help="per account; default unlimited")
    parser.add_argument("--max-per-second", type=int, help="per account; default unlimited")
    parser.add_argument("--retry-after", choices=["seconds", "http-date"])
    parser.add_argument("--config-json", help="full SandboxConfig as JSON, or @file.json")
    args = parser.parse_args(argv)

    config = config_from_json(args.config_json) if args.config_json else SandboxConfig()
    overrides = {
        key: getattr(args, key)
        for key in ("latency_ms", "jitter_ms", "max_in_flight", "max_per_second", "retry_after")
        if getattr(args, key) is not None
    }
    config = SandboxConfig.model_validate(config.model_dump() | overrides)
    serve(args.host, args.port, config)


if __name__ == "__main__":
    main()
