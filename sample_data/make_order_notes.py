"""Write deterministic nightly partitions of free-text order notes for
`pipelines/extract_orders.yaml`.

    python sample_data/make_order_notes.py [--out-dir DIR] [--seed N]

writes DIR/order_notes/night=YYYY-MM-DD/part-0.parquet for three nights (note_id, channel,
customer, note), about 1,000 notes each, and DIR/order_notes_labels.parquet (note_id, night,
order_id, amount, currency, action, relation, source_note_id). A note is one of

    original   written from scratch
    repeat     a note of an earlier night or the same night sent again, reworded or not
               (a customer chasing up): what dedup, and dedup across runs, should catch
    changed    an earlier note with only the order number or the amount changed

Notes come from chat, phone (an agent's shorthand), web forms and e-mail (with greetings,
signatures and a quoted `On ... wrote:` thread). No network and no model: stdlib `random` with
a fixed seed, and polars to write Parquet.
"""

from __future__ import annotations

import argparse
import random
import shutil
from collections import Counter
from pathlib import Path

import polars as pl

SEED = 20261202
NIGHTS = ("2026-12-01", "2026-12-02", "2026-12-03")
PER_NIGHT = 1000
REPEAT_SHARE, CHANGED_SHARE = 0.12, 0.04
ACTIONS = ("refund", "cancel", "exchange", "address_change", "status", "complaint")
NO_AMOUNT = ("exchange", "address_change", "status")  # notes that name no amount
CURRENCIES = {"USD": "${v}", "EUR": "€{v}", "GBP": "£{v}"}
NAMES = ["Ana Silva", "Ben Okafor", "Chen Wei", "Dara Murphy", "Elif Kaya", "Farah Haddad",
         "Gus Lindqvist", "Hana Sato", "Ivan Petrov", "Jo Müller", "Kofi Mensah", "Lena Novak"]
ITEMS = ["blender", "desk lamp", "running shoes", "rain jacket", "backpack", "fitness tracker",
         "thermostat", "headphones"]
CHANNELS = ("chat", "phone", "web", "email")

WORDINGS: dict[str, list[str]] = {
    "refund": ["Customer wants a refund of {money} for order {order} ({item}).",
               "Please refund {money} on order {order}, the {item} went back last week.",
               "Refund request: order {order}, {money}, {item} returned."],
    "cancel": ["Cancel order {order} ({item}, {money}) before it ships.",
               "Customer asks us to cancel {order}; the {item} was ordered by mistake ({money}).",
               "Cancellation: order {order}, {item}, paid {money}."],
    "exchange": ["Exchange the {item} from order {order} for another size.",
                 "Order {order}: customer wants to swap the {item} for a different size.",
                 "Size swap on {order} ({item})."],
    "address_change": ["Change the delivery address of order {order} to {street}.",
                       "Order {order} must go to {street} instead.",
                       "New shipping address for {order}: {street}."],
    "status": ["Where is order {order}? The {item} has not arrived.",
               "Customer asks for the status of order {order} ({item}).",
               "Chasing order {order}, no tracking update for the {item}."],
    "complaint": ["Order {order} arrived with a broken {item}; customer is unhappy.",
                  "Complaint about {order}: the {item} was damaged, paid {money}.",
                  "The {item} in order {order} is faulty and the customer is angry."],
}
STREETS = ["12 Harbor St, Leeds", "4 Rue des Lilas, Lyon", "88 Maple Ave, Denver",
           "Hauptstr. 7, Köln", "21 Elm Street, Dublin"]
PHONE_PREFIX = ["Call from {name}:", "cust called re", "Tel. {name} -"]
URGENT = ["URGENT: ", "", "", "", "", "", ""]


def _facts(rng: random.Random) -> dict[str, object]:
    currency = rng.choice(list(CURRENCIES))
    return {
        "order": f"{rng.choice(['NP', 'WEB', 'SO'])}-{rng.randint(100_000, 999_999)}",
        "amount": rng.randint(1500, 45000) / 100,
        "currency": currency,
        "action": rng.choice(ACTIONS),
        "item": rng.choice(ITEMS),
        "street": rng.choice(STREETS),
        "name": rng.choice(NAMES),
        "channel": rng.choices(CHANNELS, weights=[3, 2, 3, 2])[0],
    }


def _money(facts: dict[str, object]) -> str:
    return CURRENCIES[str(facts["currency"])].format(v=f"{facts['amount']:.2f}")


def _render(rng: random.Random, facts: dict[str, object], wording: int) -> str:
    core = WORDINGS[str(facts["action"])][wording].format(money=_money(facts), **facts)
    name, channel = str(facts["name"]), facts["channel"]
    core = rng.choice(URGENT) + core
    if channel == "phone":
        return f"{rng.choice(PHONE_PREFIX).format(name=name)} {core}"
    if channel == "web":
        return f"Web form ({name}): {core}"
    if channel == "chat":
        return core
    first = name.split()[0]
    quoted = (f"On Mon, 30 Nov 2026 at 09:{rng.randint(10, 59)}, {name} <"
              f"{first.lower()}@example.com> wrote:\n> {core}")
    return (f"Hi team,\n\n{core}\n\nThanks,\n{name}\n\n{quoted}" if rng.random() < 0.5
            else f"Hello,\n{core}\nBest regards,\n{first}")


def build(seed: int = SEED) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    """({night: notes}, labels); the same seed always gives the same frames."""
    rng = random.Random(seed)
    seen: list[dict[str, object]] = []  # every note so far, for repeats
    nights: dict[str, pl.DataFrame] = {}
    labels: list[dict[str, object]] = []
    number = 50_000
    for night in NIGHTS:
        notes = []
        for _ in range(PER_NIGHT):
            draw = rng.random()
            if seen and draw < REPEAT_SHARE:
                src = rng.choice(seen)
                facts, relation = dict(src["facts"]), "repeat"  # type: ignore[call-overload]
                wording = rng.choice([src["wording"], rng.randint(0, 2)])
            elif seen and draw < REPEAT_SHARE + CHANGED_SHARE:
                src = rng.choice(seen)
                facts, relation = dict(src["facts"]), "changed"  # type: ignore[call-overload]
                fresh = _facts(rng)
                key = ("order" if facts["action"] in NO_AMOUNT
                       else rng.choice(["order", "amount"]))
                facts[key] = fresh[key]
                wording = src["wording"]
            else:
                src, facts, relation = None, _facts(rng), "original"
                wording = rng.randint(0, 2)
            number += rng.choice([1, 1, 2])
            note_id = f"N-{number}"
            amount = None if facts["action"] in NO_AMOUNT else facts["amount"]
            note = {"note_id": note_id, "channel": str(facts["channel"]),
                    "customer": str(facts["name"]), "note": _render(rng, facts, int(wording))}
            notes.append(note)
            seen.append({"facts": facts, "wording": wording, "note_id": note_id})
            labels.append({"note_id": note_id, "night": night, "order_id": facts["order"],
                           "amount": amount, "currency": None if amount is None
                           else facts["currency"], "action": facts["action"],
                           "relation": relation,
                           "source_note_id": None if src is None else src["note_id"]})
        nights[night] = pl.DataFrame(notes, schema={c: pl.String for c in notes[0]})
    label_frame = pl.DataFrame(labels, schema={
        "note_id": pl.String, "night": pl.String, "order_id": pl.String, "amount": pl.Float64,
        "currency": pl.String, "action": pl.String, "relation": pl.String,
        "source_note_id": pl.String})
    return nights, label_frame


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    nights, labels = build(args.seed)
    root = args.out_dir / "order_notes"
    shutil.rmtree(root, ignore_errors=True)
    for night, frame in nights.items():
        folder = root / f"night={night}"
        folder.mkdir(parents=True)
        frame.write_parquet(folder / "part-0.parquet", statistics=False)
    labels.write_parquet(args.out_dir / "order_notes_labels.parquet", statistics=False)
    counts = Counter(labels["relation"].to_list())
    print(f"wrote {labels.height} notes in {len(nights)} nights under {root}: "
          + ", ".join(f"{k} {counts[k]}" for k in ("original", "repeat", "changed")))


if __name__ == "__main__":
    main()
