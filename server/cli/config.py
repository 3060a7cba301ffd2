"""`lmg config show`: every effective setting of a node and where it came from.

    lmg config show [--config FILE] [--<key> VALUE ...] [--json]

It takes what `lmg serve` takes (every key as a flag, `--config` / `LMG_CONFIG`, the
`LMG_*` variables) and prints, per key, the value `lmg serve` would use and its source:
`default`, `file PATH`, `environment LMG_KEY` or `flag --key` (flags win, then the
environment, then the file: server/settings.py `explain`). Run it with the service's
environment (`systemctl show -p Environment lmg`, its EnvironmentFile) to see what the
service sees.

Rules:
- Secrets are never printed: a secret key (`forward_app_secret`) shows as `<hidden>` when
  set and `''` when not; a password inside a URL (`store`, `forward_url`) as `***`.
- It opens nothing: no store, no listener, no file but the config file.
- A value that cannot be read (not a number, an unknown key in the file) is a usage
  error naming the key and its source (exit 2). Values that read but would not start the
  gateway (tls_cert without tls_key, a bad HOST:PORT, an unusable store URL) are still
  shown, then the reason is printed and the status is 2, so the table says where the
  culprit came from.
"""

from __future__ import annotations

import argparse
import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from lmg.server.cli import UsageError
from lmg.server.settings import KEYS, SECTIONS, Settings, SettingsError, Sourced, add_flags, explain, flag_values

HIDDEN = "<hidden>"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("config", help="show the effective settings and where each came from")
    group = parser.add_subparsers(dest="config_command", metavar="ACTION")
    group.required = True
    show = group.add_parser(
        "show", help="every setting: its effective value and its source (default, file, environment, flag)",
        description="Every setting `lmg serve` would use with these flags, this environment and this config "
                    "file, and where each value came from. Secrets are masked.")
    show.add_argument("--config", help="TOML file with settings keys (also LMG_CONFIG)")
    show.add_argument("--json", action="store_true", help="print JSON: config_file, settings {key: {value, "
                                                          "source, where}}, error")
    add_flags(show)
    show.set_defaults(handler=show_config)


def shown(name: str, value: Any) -> Any:
    """`value` of key `name` as it may be printed: secrets hidden, URL passwords masked."""
    if KEYS[name].secret:
        return HIDDEN if value else ""
    if isinstance(value, str) and "://" in value:
        return mask_url_password(value)
    return value


def mask_url_password(url: str) -> str:
    """`url` with the password of its user part, if any, replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user.split(':', 1)[0]}:***@{host}"))


def show_config(args: argparse.Namespace) -> int:
    try:
        values = explain(flag_values(args), os.environ, args.config)
    except SettingsError as exc:
        raise UsageError(str(exc)) from None
    config_file = args.config or os.environ.get("LMG_CONFIG") or None
    file_source = "--config" if args.config else "LMG_CONFIG"
    store, error = None, None
    try:
        store = store_in_use(Settings.from_keys({name: sourced.value for name, sourced in values.items()}))
    except (SettingsError, ValueError) as exc:
        error = str(exc)
    if args.json:
        print(orjson.dumps({
            "config_file": config_file,
            "settings": {name: {"value": shown(name, s.value), "source": s.source, "where": s.where or None}
                         for name, s in values.items()},
            "store": store,
            "error": error,
        }).decode())
    else:
        _print_table(values, config_file and f"{config_file} (from {file_source})", store)
    if error is not None:
        raise UsageError(f"these settings would not start the gateway: {error}")
    return 0


def store_in_use(settings: Settings) -> str:
    """Where the store is, for a person ("SQLite at PATH", or the PostgreSQL URL with its
    password masked); ValueError, its URL masked, if the store URL is unusable."""
    from lmg.storage import StoreUrlError, parse_store_url

    url = settings.store_url()
    try:
        location = parse_store_url(url, settings.gateway.data_dir)
    except StoreUrlError as exc:
        raise ValueError(str(exc).replace(url, mask_url_password(url))) from None
    return f"SQLite at {location.sqlite_path}" if location.dialect == "sqlite" else location.display


def _print_table(values: dict[str, Sourced], config_file: str | None, store: str | None) -> None:
    print(f"config file: {config_file or 'none (--config FILE or LMG_CONFIG names one)'}")
    if store is not None:
        print(f"store: {store}")
    width = max(len(name) for name in values)
    rendered = {name: HIDDEN if KEYS[name].secret and s.value else repr(shown(name, s.value))
                for name, s in values.items()}
    value_width = min(40, max(len(text) for text in rendered.values()))
    for section in SECTIONS:
        print(f"\n[{section.name}]")
        for name, sourced in values.items():
            if KEYS[name].section == section.name:
                print(f"{name:<{width}}  {rendered[name]:<{value_width}}  {sourced}")
