"""Write the labelled set for semantic dedup: paraphrase groups, hard negatives, singletons.

    .venv/bin/python tests/data/dedup_labelled.py [--out PATH] [--seed N]

writes tests/data/dedup_labelled.parquet with columns

    id      L0001, L0002, ... (rows are shuffled, so ids say nothing about groups)
    text    one short support-ticket request
    group   the request's identity: rows with the same group need the same answer
    kind    paraphrase | hard_negative | singleton
    change  for a hard negative, what differs from the group it imitates (order, amount,
            product, place, date, negation, opposite, code, quantity, email, time, or intent:
            the same facts asked for something else), else null

A paraphrase group is one intent with fixed facts written with several templates, each with a
random greeting, sign-off, typo, case and fact format ("$20", "20 dollars", "USD 20"). A hard
negative copies a group's template and changes one fact (order #10233 -> #10234, $20 -> $200,
"fits" -> "does not fit", Denver -> Austin, ...), or keeps every fact and asks for something else
("cancel order #10233" against "where is my refund for order #10233"); it is a group of its
own, written twice.
Deterministic: stdlib `random` with a fixed seed.
"""

from __future__ import annotations

import argparse
import random
import re
from pathlib import Path

import polars as pl

SEED = 20261123
OUT = Path(__file__).with_suffix(".parquet")
PRODUCTS = (
    "Lumen desk lamp", "AeroBlend blender", "Summit Shell jacket", "Nomad backpack",
    "PulseBand tracker", "HearthTemp thermostat", "TrailRunner shoes", "Vortex vacuum",
)  # fmt: skip
CITIES = ("Denver", "Austin", "Seattle", "Boston", "Portland", "Chicago", "Miami", "Phoenix")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
MONTHS = ("January", "February", "March", "April", "June", "July", "August", "October")
PLANS = ("Plus", "Premium", "Family", "Business")
PARTS = ("charging cable", "replacement lid", "wall bracket", "spare filter", "strap")
NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 10: "ten"}


def fmt_order(rng: random.Random, n: int) -> str:
    return rng.choice([f"#{n}", f"{n}", f"number {n}", f"no. {n}", f"#{n}"])


def fmt_amount(rng: random.Random, n: int) -> str:
    return rng.choice([f"${n}", f"${n}.00", f"{n} dollars", f"USD {n}", f"{n} USD", f"${n}"])


def fmt_date(rng: random.Random, month: str, day: int) -> str:
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(day % 10 if day not in (11, 12, 13) else 0, "th")
    forms = [f"{month} {day}", f"{day} {month}", f"{month} {day}{suffix}"]
    return rng.choice([*forms, f"the {day}{suffix} of {month}"])


def fmt_qty(rng: random.Random, n: int) -> str:
    return rng.choice([str(n), NUMBER_WORDS.get(n, str(n))])


def fmt_weekday(rng: random.Random, day: str) -> str:
    return day if rng.random() < 0.8 else day.lower()


def fmt_time(rng: random.Random, hour: int) -> str:
    h12 = hour - 12 if hour > 12 else hour
    ampm = "pm" if hour >= 12 else "am"
    forms = [f"{h12}{ampm}", f"{h12} {ampm}", f"{h12}:00 {ampm}"]
    return rng.choice([*forms, f"{h12} {ampm.upper()}"])


def short(product: str) -> str:
    """The product's brand word plus its last word: "Lumen desk lamp" -> "Lumen lamp"."""
    words = product.split()
    return product if len(words) <= 2 else f"{words[0]} {words[-1]}"


# intent -> (slot names, templates). Every template states every slot, so the facts match.
INTENTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "refund_status": (("order",), (
        "Where is my refund for order {order}?",
        "I returned order {order} and I'm still waiting for the money to come back.",
        "Can you check the status of the refund on order {order}?",
        "When will I get my money back for order {order}?",
        "Refund for order {order} - any update?",
        "I sent back order {order} weeks ago, where's my refund?",
        "What is happening with my refund? Order {order}.",
        "Still waiting on the refund for my order {order}, when will it be processed?",
    )),
    "cancel_order": (("order",), (
        "Please cancel order {order}.",
        "I want to cancel my order {order} before it ships.",
        "Can you cancel order {order} for me?",
        "I'd like to cancel order {order}, I ordered it by mistake.",
        "Cancel my order {order} please.",
        "How do I cancel order {order}? I changed my mind.",
        "Please stop order {order}, I want to cancel it.",
    )),
    "double_charge": (("amount", "product"), (
        "I was charged {amount} twice for the {product}.",
        "You billed me twice, {amount} each time, for my {product} order.",
        "My card shows two charges of {amount} for the {product}.",
        "Double charged {amount} for the {product}, please reverse the extra charge.",
        "There are two identical payments of {amount} for a single {product}.",
        "Why did you take {amount} from my account twice for the {product}?",
        "The {product} purchase of {amount} went through twice on my card.",
    )),
    "price_charged": (("amount", "product"), (
        "You charged me {amount} for the {product}, is that the right price?",
        "Why was I charged {amount} for my {product}?",
        "I see a charge of {amount} for the {product} on my statement, can you explain it?",
        "The {product} cost me {amount}, which seems wrong.",
        "Can you tell me why my {product} order came to {amount}?",
        "My receipt says {amount} for the {product}. Is that correct?",
    )),
    "ship_to_city": (("order", "city"), (
        "Please ship order {order} to my new address in {city}.",
        "I moved to {city}, can you send order {order} there instead?",
        "Can order {order} be delivered to {city} rather than my old address?",
        "Change the delivery address of order {order} to {city} please.",
        "I need order {order} redirected to {city}.",
        "Could you update the shipping address for order {order}? I now live in {city}.",
    )),
    "store_hours": (("city", "weekday"), (
        "Is your {city} store open on {weekday}?",
        "What are the opening hours of the {city} shop on {weekday}?",
        "Will the {city} store be open this {weekday}?",
        "Can I visit your store in {city} on {weekday}?",
        "Are you open on {weekday} at the {city} location?",
        "Hours for the {city} store on {weekday}, please?",
    )),
    "deliver_on_day": (("order", "weekday"), (
        "Can you deliver order {order} on {weekday} instead?",
        "I won't be home, please move the delivery of order {order} to {weekday}.",
        "Please reschedule order {order} for {weekday}.",
        "Is it possible to get order {order} delivered on {weekday}?",
        "Could the courier bring order {order} on {weekday}?",
        "I'd like order {order} to arrive on {weekday}, can you arrange that?",
    )),
    "device_turns_on": (("product",), (
        "My {product} turns on again after the update, you can close the ticket.",
        "Good news, the {product} powers on now, so please close my ticket.",
        "The {product} is working again after the update, close the case please.",
        "After the update my {product} starts up fine, the ticket can be closed.",
        "The {product} switches on now, thanks, please close this request.",
    )),
    "device_dead": (("product",), (
        "My {product} will not turn on after the update.",
        "The {product} doesn't power on since the update.",
        "After the update my {product} won't start at all.",
        "Since updating, my {product} does not switch on.",
        "The {product} won't turn on anymore after the update, what can I do?",
        "My {product} has not powered on since the latest update.",
    )),
    "part_fits": (("part", "product"), (
        "The {part} you sent fits my {product}, thanks.",
        "Good news: the {part} fits the {product} perfectly.",
        "The new {part} works with my {product} and fits fine.",
        "I tried the {part} on my {product} and it fits.",
        "The {part} for the {product} arrived and it fits well.",
    )),
    "part_not_fit": (("part", "product"), (
        "The {part} you sent does not fit my {product}.",
        "The {part} doesn't fit the {product} at all.",
        "The new {part} is not compatible with my {product}, it doesn't fit.",
        "I tried the {part} on my {product} and it won't fit.",
        "The {part} for the {product} arrived but it does not fit.",
    )),
    "refund_received": (("order",), (
        "I have received the refund for order {order}, thanks.",
        "The refund for order {order} has arrived in my account.",
        "Got the money back for order {order}, all good.",
        "Just confirming the refund for order {order} came through.",
        "The refund on order {order} is in my bank account now, thank you.",
    )),
    "refund_missing": (("order",), (
        "I have not received the refund for order {order}.",
        "The refund for order {order} never arrived in my account.",
        "Didn't get the money back for order {order}.",
        "The refund for order {order} hasn't come through.",
        "No refund for order {order} in my bank account yet.",
    )),
    "sku_stock": (("sku",), (
        "Is SKU {sku} back in stock?",
        "When will item {sku} be available again?",
        "Do you have {sku} in stock now?",
        "Any restock date for product code {sku}?",
        "I want to buy {sku}, is it available?",
        "Is the item with SKU {sku} in stock?",
    )),
    "reset_password": (("email",), (
        "Please reset the password for {email}.",
        "I forgot my password, my account email is {email}.",
        "Can you send a password reset link to {email}?",
        "I need a new password for the account {email}.",
        "Password reset please, the login is {email}.",
        "Locked out of my account {email}, please reset my password.",
    )),
    "invoice_month": (("month", "product"), (
        "I need an invoice for my {product} purchase in {month}.",
        "Could you send me the invoice for the {product} I bought in {month}?",
        "Please email the {month} invoice for my {product}.",
        "Where can I download the invoice for my {product} order from {month}?",
        "I'm missing the invoice for the {product} purchased in {month}.",
        "Invoice request: {product}, bought in {month}.",
    )),
    "cancel_sub_date": (("date",), (
        "Please cancel my CloudVault subscription effective {date}.",
        "I want my CloudVault plan to end on {date}.",
        "Cancel CloudVault for me as of {date}.",
        "Can you stop my CloudVault subscription from {date}?",
        "End my CloudVault membership on {date} please.",
        "I'd like to cancel the CloudVault subscription starting {date}.",
    )),
    "order_more": (("qty", "product"), (
        "I'd like to order {qty} more units of the {product}.",
        "Can I buy {qty} additional {product} units?",
        "Please add {qty} more {product} units to my order.",
        "We need another {qty} of the {product} for the office.",
        "Could you send {qty} extra {product} units?",
        "I want to purchase {qty} more of the {product}.",
    )),
    "store_pickup": (("city", "order"), (
        "Can I pick up order {order} at the {city} store?",
        "I'd like to collect order {order} in person from your {city} shop.",
        "Is store pickup in {city} possible for order {order}?",
        "Please make order {order} available for pickup at {city}.",
        "Could I grab order {order} at your {city} location instead of shipping?",
    )),
    "promo_code": (("promo",), (
        "The promo code {promo} is not working at checkout.",
        "Your discount code {promo} doesn't work for me.",
        "I can't apply the code {promo}, it says invalid.",
        "Checkout rejects the coupon {promo}, why?",
        "Code {promo} won't apply to my cart.",
        "Why is {promo} not accepted at checkout?",
    )),
    "repair_slot": (("time", "weekday"), (
        "Can I book a repair appointment at {time} on {weekday}?",
        "Is there a repair slot at {time} on {weekday}?",
        "I'd like to bring my device in for repair on {weekday} at {time}.",
        "Please schedule my repair for {weekday}, {time}.",
        "Do you have availability for a repair on {weekday} at {time}?",
    )),
    "track_parcel": (("tracking",), (
        "Where is my parcel with tracking number {tracking}?",
        "Tracking {tracking} stopped updating days ago, where is it?",
        "Can you look up shipment {tracking} for me?",
        "My package {tracking} seems stuck, any news?",
        "What is the status of tracking code {tracking}?",
    )),
    "warranty_year": (("product", "year"), (
        "Is my {product} from {year} still under warranty?",
        "I bought the {product} in {year}, is the warranty still valid?",
        "Does the warranty cover a {product} purchased in {year}?",
        "My {product} is from {year}, can I still claim warranty?",
        "Warranty question: {product} bought in {year}, still covered?",
    )),
    "exchange_size": (("product", "size"), (
        "Can I exchange my {product} for a size {size}?",
        "I need the {product} in size {size} instead, can I swap it?",
        "Please swap my {product} for size {size}.",
        "The {product} is too small, I'd like a size {size}.",
        "Could I get a size {size} {product} in exchange?",
    )),
    "too_big": (("product",), (
        "The {product} is too big for me, can I exchange it?",
        "My {product} runs large, I need to swap it.",
        "I ordered the {product} but it's too big, what are my options?",
        "The {product} came in a bigger size than expected, I'd like to exchange it.",
        "The {product} is way too large, please help me exchange it.",
    )),
    "too_small": (("product",), (
        "The {product} is too small for me, can I exchange it?",
        "My {product} runs small, I need to swap it.",
        "I ordered the {product} but it's too small, what are my options?",
        "The {product} came in a smaller size than expected, I'd like to exchange it.",
        "The {product} is way too small, please help me exchange it.",
    )),
    "upgrade_plan": (("plan",), (
        "I want to upgrade my CloudVault subscription to the {plan} plan.",
        "Please upgrade me to CloudVault {plan}.",
        "How do I upgrade to the {plan} tier of CloudVault?",
        "Can you upgrade my CloudVault account to {plan}?",
        "Upgrading to CloudVault {plan}, what do I need to do?",
    )),
    "downgrade_plan": (("plan",), (
        "I want to downgrade my CloudVault subscription to the {plan} plan.",
        "Please downgrade me to CloudVault {plan}.",
        "How do I downgrade to the {plan} tier of CloudVault?",
        "Can you downgrade my CloudVault account to {plan}?",
        "Downgrading to CloudVault {plan}, what do I need to do?",
    )),
    "add_gift_wrap": (("order",), (
        "Please add gift wrapping to order {order}.",
        "Can you add gift wrap to my order {order}?",
        "I'd like gift wrapping added to order {order}.",
        "Add a gift wrap to order {order} please.",
        "Could gift wrapping be added to order {order}?",
    )),
    "remove_gift_wrap": (("order",), (
        "Please remove gift wrapping from order {order}.",
        "Can you remove the gift wrap from my order {order}?",
        "I'd like the gift wrapping removed from order {order}.",
        "Remove the gift wrap from order {order} please.",
        "Could gift wrapping be removed from order {order}?",
    )),
    "deliver_earlier": (("order",), (
        "Can order {order} be delivered earlier?",
        "I need order {order} to arrive earlier than planned.",
        "Please move the delivery of order {order} to an earlier slot.",
        "Is an earlier delivery possible for order {order}?",
        "Could you bring order {order} earlier?",
    )),
    "deliver_later": (("order",), (
        "Can order {order} be delivered later?",
        "I need order {order} to arrive later than planned.",
        "Please move the delivery of order {order} to a later slot.",
        "Is a later delivery possible for order {order}?",
        "Could you bring order {order} later?",
    )),
}  # fmt: skip

SINGLETONS = (
    "Do you ship to Canada?",
    "How do I delete my account permanently?",
    "What is your return policy for sale items?",
    "Can I pay with PayPal?",
    "Do you offer gift wrapping?",
    "How long does standard shipping usually take?",
    "Is there a student discount?",
    "Can I change the email address on my account?",
    "Do you have a loyalty program?",
    "Are your jackets waterproof or just water resistant?",
    "How do I unsubscribe from the newsletter?",
    "Can I add a note for the courier?",
    "Is the blender dishwasher safe?",
    "What payment methods do you accept?",
    "Do you sell gift cards?",
    "How do I update my billing details?",
    "Can I order by phone?",
    "Is the lamp bulb replaceable?",
    "Does the tracker work with iPhone?",
    "How do I pair the thermostat with the app?",
    "Can I return an item without the box?",
    "Do you have a size guide for shoes?",
    "Is there a warranty on refurbished items?",
    "Where can I find my order history?",
    "Can I split the payment across two cards?",
    "How do I leave a review?",
    "Why was my account suspended?",
    "Do you price match other stores?",
    "Is the backpack carry-on size?",
    "How do I clean the vacuum filter?",
    "Can I change my username?",
    "Are there any open jobs at your company?",
    "How do I report a security issue?",
    "Is my personal data shared with third parties?",
    "Can I get a paper catalog?",
    "Do you have a store in Europe?",
    "What does the extended warranty cost?",
    "How do I turn on two-factor authentication?",
    "Can I schedule a video call with support?",
    "Is express shipping available on weekends?",
    "The app keeps logging me out.",
    "The website is very slow today.",
    "I love the new jacket, great quality!",
    "Your courier was rude to me.",
    "The box arrived open and wet.",
)

GREETINGS = (
    "", "", "", "Hi, ", "Hello, ", "Hey there! ", "Good morning, ", "Hi team, ", "Dear support, "
)  # fmt: skip
SIGNOFFS = (
    "", "", "", " Thanks!", " Thank you.", " Cheers", " Please help.", " Thanks in advance."
)  # fmt: skip
NO_TYPO = {"not", "don't", "doesn't", "won't", "never", "didn't", "hasn't", "cannot", "haven't"}


def typo(rng: random.Random, text: str) -> str:
    """Swap two letters inside one long lower-case word (never a fact or a negation)."""
    protected = NO_TYPO | {m.lower() for m in MONTHS + WEEKDAYS}
    words = [m for m in re.finditer(r"\b[a-z]{5,}\b", text) if m.group() not in protected]
    if not words:
        return text
    m = rng.choice(words)
    w = m.group()
    i = rng.randrange(1, len(w) - 2)
    swapped = w[:i] + w[i + 1] + w[i] + w[i + 2 :]
    if swapped in set(NUMBER_WORDS.values()) | protected:  # "there" -> "three" adds a fact
        return text
    return text[: m.start()] + swapped + text[m.end() :]


def dress(rng: random.Random, text: str) -> str:
    """Greeting, sign-off, maybe a typo, maybe all lower case or no final punctuation."""
    text = rng.choice(GREETINGS) + text + rng.choice(SIGNOFFS)
    if rng.random() < 0.3:
        text = typo(rng, text)
    if rng.random() < 0.1:
        text = text.lower()
    elif rng.random() < 0.15:
        text = text.rstrip(".!?")
    return text


def draw_slots(rng: random.Random, names: tuple[str, ...]) -> dict[str, object]:
    pick = {
        "order": lambda: rng.randrange(10000, 99999),
        "amount": lambda: rng.choice([15, 20, 25, 40, 49, 60, 75, 89, 120, 150]),
        "product": lambda: rng.choice(PRODUCTS),
        "city": lambda: rng.choice(CITIES),
        "weekday": lambda: rng.choice(WEEKDAYS),
        "part": lambda: rng.choice(PARTS),
        "sku": lambda: f"{rng.choice('ABCDKMPX')}{rng.choice('BCRTX')}-{rng.randrange(10, 99)}",
        "email": lambda: (
            f"{rng.choice(['anna', 'li.wei', 'sam', 'jo', 'kim'])}"
            f"{rng.randrange(1, 99)}@{rng.choice(['mail.com', 'example.org', 'inbox.net'])}"
        ),
        "month": lambda: rng.choice(MONTHS),
        "date": lambda: (rng.choice(MONTHS), rng.randrange(1, 28)),
        "qty": lambda: rng.choice([2, 3, 4, 5, 6, 10]),
        "promo": lambda: (
            rng.choice(["SAVE", "SPRING", "WELCOME", "VIP"]) + str(rng.choice([10, 15, 20]))
        ),
        "time": lambda: rng.choice([9, 10, 11, 14, 15, 16]),
        "tracking": lambda: f"1Z{rng.randrange(100, 999)}AA{rng.randrange(10**7, 10**8)}",
        "year": lambda: rng.choice([2019, 2020, 2021, 2022, 2023]),
        "size": lambda: rng.choice([7, 8, 9, 10, 11]),
        "plan": lambda: rng.choice(PLANS),
    }
    return {name: pick[name]() for name in names}


def mutate(
    rng: random.Random, slots: dict[str, object], name: str
) -> tuple[dict[str, object], str]:
    """The same slots with fact `name` changed the way a near-duplicate would change it."""
    value = slots[name]
    new: object
    if name == "order":
        new, change = int(value) + rng.choice([1, -1, 10]), "order"  # type: ignore[call-overload]
    elif name == "amount":
        new, change = int(value) * 10, "amount"  # type: ignore[call-overload]
    elif name in ("product", "city", "weekday", "part", "month", "plan"):
        pool = {"product": PRODUCTS, "city": CITIES, "weekday": WEEKDAYS, "part": PARTS,
                "month": MONTHS, "plan": PLANS}[name]  # fmt: skip
        new = rng.choice([p for p in pool if p != value])
        change = {"product": "product", "city": "place", "part": "product", "plan": "product"}.get(
            name, "date"
        )
    elif name == "date":
        month, day = value  # type: ignore[misc]
        new, change = (month, day + 10 if day < 18 else day - 10), "date"
    elif name in ("qty", "size", "year"):
        new, change = int(value) + 1, "quantity"  # type: ignore[call-overload]
    elif name == "time":
        new, change = int(value) + 1, "time"  # type: ignore[call-overload]
    elif name == "email":
        user, domain = str(value).split("@")
        new, change = f"{user}x@{domain}", "email"
    else:  # sku, promo, tracking: one character of the code
        text = str(value)
        digits = [i for i, c in enumerate(text) if c.isdigit()]
        i = digits[-1]
        new, change = text[:i] + str((int(text[i]) + 1) % 10) + text[i + 1 :], "code"
    return {**slots, name: new}, change


def render(rng: random.Random, template: str, slots: dict[str, object]) -> str:
    values: dict[str, str] = {}
    for name, value in slots.items():
        if name == "order":
            values[name] = fmt_order(rng, int(value))  # type: ignore[call-overload]
        elif name == "amount":
            values[name] = fmt_amount(rng, int(value))  # type: ignore[call-overload]
        elif name == "date":
            values[name] = fmt_date(rng, *value)  # type: ignore[misc]
        elif name == "qty":
            values[name] = fmt_qty(rng, int(value))  # type: ignore[call-overload]
        elif name == "weekday":
            values[name] = fmt_weekday(rng, str(value))
        elif name == "time":
            values[name] = fmt_time(rng, int(value))  # type: ignore[call-overload]
        elif name == "product":
            values[name] = rng.choice([str(value), str(value), short(str(value))])
        else:
            values[name] = str(value)
    text = template.format(**values)
    return text[0].upper() + text[1:]


# Intents whose hard negatives are their opposite, same facts: (opposite intent, change).
OPPOSITES = {
    "device_turns_on": ("device_dead", "negation"),
    "part_fits": ("part_not_fit", "negation"),
    "refund_received": ("refund_missing", "negation"),
    "too_big": ("too_small", "opposite"),
    "upgrade_plan": ("downgrade_plan", "opposite"),
    "add_gift_wrap": ("remove_gift_wrap", "opposite"),
    "deliver_earlier": ("deliver_later", "opposite"),
}


def same_facts_intents(intent: str) -> list[str]:
    """Other intents stating the same kinds of facts (not the opposite already written)."""
    names = sorted(INTENTS[intent][0])
    written = {intent, OPPOSITES[intent][0]} if intent in OPPOSITES else {intent}
    return [
        other
        for other, (other_names, _) in INTENTS.items()
        if other not in written and sorted(other_names) == names
    ]


def build(seed: int = SEED) -> pl.DataFrame:
    """The labelled rows, shuffled, with ids assigned after shuffling."""
    rng = random.Random(seed)
    rows: list[dict[str, str | None]] = []

    def add(group: str, templates: list[str], slots: dict[str, object], kind: str,
            change: str | None) -> None:  # fmt: skip
        for template in templates:
            rows.append({"text": dress(rng, render(rng, template, slots)), "group": group,
                         "kind": kind, "change": change})  # fmt: skip

    taken: set[tuple[str, tuple[tuple[str, object], ...]]] = set()

    def claim(intent: str, slots: dict[str, object]) -> bool:
        """Reserve these facts for one group; False if another group already states them."""
        key = (intent, tuple(sorted(slots.items())))
        if key in taken:
            return False
        taken.add(key)
        return True

    n = 0
    made: list[tuple[int, str, dict[str, object]]] = []
    for intent, (names, templates) in INTENTS.items():
        if intent in {opposite for opposite, _ in OPPOSITES.values()}:
            continue
        for i in range(3):
            n += 1
            slots = draw_slots(rng, names)
            while not claim(intent, slots):
                slots = draw_slots(rng, names)
            chosen = rng.sample(templates, k=rng.choice([3, 4, 4, 5]))
            add(f"g{n:03d}", chosen, slots, "paraphrase", None)
            if intent in OPPOSITES:
                # the negated intent, same facts: written with the parallel templates
                opposite, change = OPPOSITES[intent]
                claim(opposite, slots)
                flipped = [INTENTS[opposite][1][templates.index(t)] for t in chosen[:2]]
                add(f"g{n:03d}n", flipped, slots, "hard_negative", change)
            if intent not in OPPOSITES or rng.random() < 0.5:
                for _ in range(50):
                    other, change = mutate(rng, slots, names[i % len(names)])
                    if claim(intent, other):
                        add(f"g{n:03d}h", [chosen[0], rng.choice(templates)], other,
                            "hard_negative", change)  # fmt: skip
                        break
            made.append((n, intent, slots))
    # after every group has claimed its facts: another request about the same order / product /
    # amount, same facts, other intent
    for n, intent, slots in made:
        others = same_facts_intents(intent)
        if others and rng.random() < 0.6:
            other = rng.choice(others)
            if claim(other, slots):
                written = rng.sample(INTENTS[other][1], k=2)
                add(f"g{n:03d}i", written, slots, "hard_negative", "intent")
    for i, text in enumerate(SINGLETONS):
        rows.append({"text": dress(rng, text), "group": f"s{i:03d}", "kind": "singleton",
                     "change": None})  # fmt: skip
    rng.shuffle(rows)
    frame = pl.DataFrame(rows, schema={"text": pl.String, "group": pl.String, "kind": pl.String,
                                       "change": pl.String})  # fmt: skip
    ids = pl.Series("id", [f"L{i:04d}" for i in range(1, len(rows) + 1)])
    return frame.insert_column(0, ids).unique(subset="text", keep="first", maintain_order=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    frame = build(args.seed)
    frame.write_parquet(args.out)
    counts = frame.group_by("kind").len().sort("kind").rows()
    print(f"wrote {args.out}: {frame.height} rows, {frame['group'].n_unique()} groups, {counts}")


if __name__ == "__main__":
    main()
