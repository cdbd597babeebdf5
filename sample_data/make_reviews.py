"""Write a deterministic sample of product reviews for `pipelines/classify_reviews.yaml`.

    python sample_data/make_reviews.py [--out-dir DIR] [--seed N]

writes DIR/reviews.parquet (review_id, product, rating, posted_at, review) and
DIR/reviews_labels.parquet (review_id, sentiment, topic, relation, source_review_id), where
relation is one of

    original       written from scratch
    exact          same text as its source, new review_id
    reworded       its source's facts in another wording (same sentiment and topic)
    hard_negative  its source with only the order number or the amount changed
    edge           a null review, an empty one, a 20,000-character one

Some originals are in German, French, Spanish or Japanese (non-ASCII). No network and no
model: stdlib `random` with a fixed seed, and polars to write Parquet.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
from collections import Counter
from pathlib import Path

import polars as pl

SEED = 20261201
N_REVIEWS = 2000
SHARES = {"exact": 0.06, "reworded": 0.06, "hard_negative": 0.04}
START_DATE = dt.date(2026, 9, 1)

PRODUCTS = [
    "AeroBlend 900 blender", "Lumen desk lamp", "TrailRunner 3 running shoes",
    "Summit Shell jacket", "Nomad 40L backpack", "PulseBand 2 fitness tracker",
    "HearthTemp smart thermostat", "Quietline ANC headphones",
]
SENTIMENTS = ("positive", "negative", "neutral", "mixed")
TOPICS = ("quality", "delivery", "price", "sizing", "customer_service", "damage", "other")
RATING = {"positive": (4, 5), "negative": (1, 2), "neutral": (3, 3), "mixed": (2, 4)}

# (sentiment, topic) -> wordings; every wording of a pair uses the same slots, so a rewording
# (another wording, same slots) says the same thing.
CLAUSES: dict[str, dict[str, list[str]]] = {
    "quality": {
        "+": ["The {product} is really well made and still works like new after {weeks} weeks.",
              "Solid build: my {product} has had daily use for {weeks} weeks without a fault."],
        "-": ["The {product} stopped working after {weeks} weeks. Poor build quality.",
              "After only {weeks} weeks of use my {product} broke. Cheap materials."],
    },
    "delivery": {
        "+": ["Order {order} arrived {days} days early, well before the date promised.",
              "Fast shipping: order {order} was at my door {days} days ahead of schedule."],
        "-": ["Order {order} arrived {days} days late and nobody told me why.",
              "My order {order} took {days} days longer than promised to arrive."],
    },
    "price": {
        "+": ["Great value at {amount}; cheaper than anything comparable.",
              "For {amount} you cannot beat it, a real bargain."],
        "-": ["Way overpriced at {amount} for what you get.",
              "Not worth {amount}; similar products cost half as much."],
    },
    "sizing": {
        "+": ["The size chart was spot on, my usual size {size} fits perfectly.",
              "Fits true to size: I ordered {size} as always and it is perfect."],
        "-": ["Runs small: my usual size {size} is far too tight.",
              "I ordered my normal {size} and it does not fit at all, the sizing is off."],
    },
    "customer_service": {
        "+": ["Support answered within {hours} hours and sorted out order {order} at once.",
              "Customer service replied in {hours} hours and fixed my problem with order {order}."],
        "-": ["I wrote to support about order {order} and waited {hours} hours for a useless "
              "reply.",
              "Support took {hours} hours to answer about order {order} and did not help."],
    },
    "damage": {
        "+": ["Even though the box of order {order} was dented, the {product} inside was fine.",
              "The parcel for order {order} looked rough but the {product} was undamaged."],
        "-": ["The {product} from order {order} arrived cracked and unusable.",
              "Order {order} came with a broken {product}; the packaging was crushed."],
    },
    "other": {
        "+": ["Bought the {product} as a gift and they love it.",
              "The {product} was a present and it went down very well."],
        "-": ["Bought the {product} as a gift and it was the wrong colour.",
              "The {product} was meant as a present but the colour was not what I ordered."],
    },
}
NEUTRAL = ["It does what it says, nothing more, nothing less.",
           "An average product: no complaints, no praise."]
OPENERS = ["", "", "Quick review.", "Update after a few weeks.", "Honest review:", "Well..."]
CLOSERS = ["", "", "Would buy again.", "Just my two cents.", "Hope this helps others."]
FOREIGN = [  # (text, sentiment, topic), in other languages and scripts
    ("Der {product} ist super verarbeitet, nach {weeks} Wochen wie neu. Klare Empfehlung!",
     "positive", "quality"),
    ("Lieferung {order} kam {days} Tage zu spät an. Sehr ärgerlich.", "negative", "delivery"),
    ("Le {product} est arrivé cassé (commande {order}). Très déçu.", "negative", "damage"),
    ("Très bon rapport qualité-prix à {amount}. Je recommande !", "positive", "price"),
    ("El {product} llegó {days} días tarde, pero funciona bien.", "mixed", "delivery"),
    ("{product}は{weeks}週間で壊れました。品質が悪いです。", "negative", "quality"),
    ("サイズ{size}がぴったりでした。とても満足です 😊", "positive", "sizing"),
]


def _slots(rng: random.Random, product: str) -> dict[str, str]:
    return {
        "product": product,
        "order": f"#{rng.randint(1_000_000, 9_999_999)}",
        "amount": f"${rng.randint(15, 400)}.{rng.choice(['00', '49', '95', '99'])}",
        "days": str(rng.randint(2, 12)),
        "weeks": str(rng.randint(2, 30)),
        "hours": str(rng.choice([2, 4, 24, 48, 72])),
        "size": rng.choice(["S", "M", "L", "XL", "US 9", "US 10", "EU 42"]),
    }


def _compose(rng: random.Random, sentiment: str, topic: str, slots: dict[str, str],
             wording: int) -> str:
    """One review: an opener, the core clause(s) in `wording`, a closer."""
    if sentiment == "neutral":
        core = NEUTRAL[wording % 2]
        if topic != "other":
            core = CLAUSES[topic]["+"][wording % 2].format(**slots) + " " + core
    elif sentiment == "mixed":
        core = (CLAUSES[topic]["+"][wording % 2].format(**slots) + " But "
                + CLAUSES["other"]["-"][wording % 2].format(**slots)[0].lower()
                + CLAUSES["other"]["-"][wording % 2].format(**slots)[1:])
    else:
        core = CLAUSES[topic]["+" if sentiment == "positive" else "-"][wording % 2].format(**slots)
    return " ".join(p for p in (rng.choice(OPENERS), core, rng.choice(CLOSERS)) if p)


def build(seed: int = SEED, n: int = N_REVIEWS) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(reviews, labels); the same seed always gives the same frames."""
    rng = random.Random(seed)
    copies = {rel: round(share * n) for rel, share in SHARES.items()}
    n_edge = 3
    n_original = n - sum(copies.values()) - n_edge
    rows: list[dict] = []
    for i in range(n_original):
        product = rng.choice(PRODUCTS)
        slots = _slots(rng, product)
        wording: int | None = rng.randint(0, 1)
        if i % 40 == 7:
            text, sentiment, topic = rng.choice(FOREIGN)
            text, wording = text.format(**slots), None
        else:
            sentiment = rng.choices(SENTIMENTS, weights=[5, 4, 1, 2])[0]
            topic = rng.choice(TOPICS)
            text = _compose(rng, sentiment, topic, slots, wording)
        rows.append({"product": product, "text": text, "sentiment": sentiment, "topic": topic,
                     "slots": slots, "wording": wording, "relation": "original",
                     "source": None})
    english = [i for i, r in enumerate(rows) if r["wording"] is not None]
    # rows that state an order number or an amount: a hard negative changes only that
    factual = [i for i in english
               if rows[i]["slots"]["order"] in rows[i]["text"]
               or rows[i]["slots"]["amount"] in rows[i]["text"]]
    for relation, count in copies.items():
        for _ in range(count):
            src_i = rng.choice(factual if relation == "hard_negative" else english)
            src = rows[src_i]
            if relation == "exact":
                text = src["text"]
            elif relation == "reworded":
                text = _compose(rng, src["sentiment"], src["topic"], src["slots"],
                                1 - src["wording"])
            else:
                key = "order" if src["slots"]["order"] in src["text"] else "amount"
                text = src["text"].replace(src["slots"][key], _slots(rng, src["product"])[key])
            rows.append({**src, "text": text, "relation": relation, "source": src_i})
    long_text = " ".join(
        _compose(rng, "negative", TOPICS[k % 6], _slots(rng, PRODUCTS[0]), k % 2)
        for k in range(400)
    )[:20_000]
    for text in (None, "", long_text):
        rows.append({"product": PRODUCTS[0], "text": text, "sentiment": "negative",
                     "topic": "quality", "slots": None, "wording": None, "relation": "edge",
                     "source": None})

    order = list(range(len(rows)))
    rng.shuffle(order)
    # the edge cases early in the file, so `--limit 300` meets them too
    edges = [i for i in order if rows[i]["relation"] == "edge"]
    order = [i for i in order if rows[i]["relation"] != "edge"]
    for position, i in zip((11, 42, 97), edges, strict=True):
        order.insert(position, i)
    ids = {i: f"R-{10_000 + k:05d}" for k, i in enumerate(order)}
    dates = [START_DATE + dt.timedelta(days=rng.randint(0, 90)) for _ in rows]
    ratings = [rng.randint(*RATING[r["sentiment"]]) for r in rows]
    reviews = pl.DataFrame(
        {
            "review_id": [ids[i] for i in order],
            "product": [rows[i]["product"] for i in order],
            "rating": [ratings[i] for i in order],
            "posted_at": [dates[i] for i in order],
            "review": [rows[i]["text"] for i in order],
        },
        schema={"review_id": pl.String, "product": pl.String, "rating": pl.Int64,
                "posted_at": pl.Date, "review": pl.String},
    )
    labels = pl.DataFrame(
        {
            "review_id": [ids[i] for i in order],
            "sentiment": [rows[i]["sentiment"] for i in order],
            "topic": [rows[i]["topic"] for i in order],
            "relation": [rows[i]["relation"] for i in order],
            "source_review_id": [
                None if rows[i]["source"] is None else ids[rows[i]["source"]] for i in order
            ],
        },
        schema={"review_id": pl.String, "sentiment": pl.String, "topic": pl.String,
                "relation": pl.String, "source_review_id": pl.String},
    )
    return reviews, labels


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    reviews, labels = build(args.seed)
    reviews.write_parquet(args.out_dir / "reviews.parquet", statistics=False)
    labels.write_parquet(args.out_dir / "reviews_labels.parquet", statistics=False)
    counts = Counter(labels["relation"].to_list())
    print(f"wrote {reviews.height} reviews to {args.out_dir}: " + ", ".join(
        f"{rel} {counts[rel]}" for rel in ("original", "exact", "reworded", "hard_negative",
                                           "edge")))


if __name__ == "__main__":
    main()
