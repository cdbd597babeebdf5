"""Write a deterministic sample of customer-support tickets, with duplicate labels.

    python sample_data/make_tickets.py [--out-dir DIR] [--seed N]

writes DIR/tickets.parquet (the tickets) and DIR/tickets_labels.parquet (ticket_id,
source_ticket_id, relation), where relation is one of

    original       written from scratch
    exact          same subject and body as its source, new ticket_id
    near           its source with whitespace / case / NFKC-foldable differences only
    paraphrase     the same request as its source in other words
    hard_negative  its source with one fact changed (order number, amount, product or a
                   negation): looks like a duplicate, must never be merged with it

No network and no model: stdlib `random` with a fixed seed, and polars to write Parquet.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import tempfile
import unicodedata
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl

SEED = 20241104
N_TICKETS = 300
SHARES = {"exact": 0.15, "near": 0.10, "paraphrase": 0.15, "hard_negative": 0.10}
START_DATE = dt.date(2024, 9, 2)
SPAN_DAYS = 88
COMPANY = "Northpeak"
SUPPORT = "Northpeak Support <support@northpeak.example>"

# name -> kind; the kind decides which issue types make sense for the product.
PRODUCTS = {
    "TrailRunner 3 running shoes": "apparel",
    "Summit Shell jacket": "apparel",
    "Nomad 40L backpack": "apparel",
    "Lumen desk lamp": "device",
    "AeroBlend 900 blender": "device",
    "HearthTemp smart thermostat": "app_device",
    "PulseBand 2 fitness tracker": "app_device",
    "CloudVault Pro": "subscription",
}
PRICES = {  # in cents
    "TrailRunner 3 running shoes": [12900, 13499, 11900],
    "Summit Shell jacket": [18900, 21950, 16500],
    "Nomad 40L backpack": [8900, 9499, 10900],
    "Lumen desk lamp": [4999, 5900, 6450],
    "AeroBlend 900 blender": [14900, 12999, 15900],
    "HearthTemp smart thermostat": [19900, 17900, 22900],
    "PulseBand 2 fitness tracker": [7999, 8900, 9950],
    "CloudVault Pro": [2000, 9900, 11988, 2400],
}
PHYSICAL = ("apparel", "device", "app_device")
ISSUE_KINDS = {
    "refund": PHYSICAL,
    "shipping_delay": PHYSICAL,
    "login": ("app_device", "subscription"),
    "double_charge": PHYSICAL + ("subscription",),
    "damaged_item": ("device", "app_device", "apparel"),
    "size_fit": ("apparel",),
    "cancellation": PHYSICAL + ("subscription",),
    "address_change": PHYSICAL,
    "warranty": ("device", "app_device"),
    "bug_report": ("app_device", "subscription"),
    "feature_request": ("app_device", "subscription"),
    "invoice_request": PHYSICAL + ("subscription",),
}

SUBJECTS = {
    "refund": [
        "Refund for order {order}",
        "Where is my refund? ({order})",
        "Returned {product} - refund not received",
        "Refund status {order}",
    ],
    "shipping_delay": [
        "Order {order} still not delivered",
        "Shipping delay on my {product}",
        "Where is my package? {order}",
        "Delivery is {days} days late",
    ],
    "login": [
        "Can't log in to my account",
        "Login problem - {product} app",
        "Locked out of my account",
        "Password reset not working",
    ],
    "double_charge": [
        "Charged twice for order {order}",
        "Double charge on my card",
        "Duplicate payment of {amount}",
        "Billing error - two charges",
    ],
    "damaged_item": [
        "Damaged {product} received",
        "Order {order} arrived broken",
        "Item damaged in transit",
        "Broken {product} - need replacement",
    ],
    "size_fit": [
        "Exchange {product} for size {size2}",
        "Size issue with my {product}",
        "Wrong fit - order {order}",
        "Can I swap the size?",
    ],
    "cancellation": [
        "Cancel order {order}",
        "Cancellation request",
        "Please cancel my {product}",
        "Cancel {order} please",
    ],
    "address_change": [
        "Change delivery address for {order}",
        "Wrong shipping address on order {order}",
        "Address update needed",
        "Please update my shipping address",
    ],
    "warranty": [
        "Warranty claim - {product}",
        "{product} stopped working",
        "Is this covered by warranty?",
        "Warranty repair for order {order}",
    ],
    "bug_report": [
        "Bug: {feature} not working",
        "{product}: {feature} broken since update",
        "Error {error_code} in the app",
        "Problem with {feature}",
    ],
    "feature_request": [
        "Feature request: {wish_short}",
        "Suggestion for {product}",
        "Idea: {wish_short}",
        "Would love {wish_short}",
    ],
    "invoice_request": [
        "Invoice for order {order}",
        "Need a VAT invoice",
        "Invoice request - {order}",
        "Receipt / invoice for {amount} payment",
    ],
}

# The core request, several wordings each. Every wording of an issue uses the same slots, so a
# paraphrase (another wording, same slots) asks for the same thing.
BODIES = {
    "refund": [
        "I returned the {product} from order {order} on {past_day} and the tracking shows it "
        "arrived at your warehouse. {pol} I still have not seen the refund of {amount} on my "
        "card. Could you check what is holding it up?",
        "Following up on my return for order {order}. The {product} went back to you on "
        "{past_day} and your site said refunds take 5-7 business days, but nothing has come "
        "through yet. {pol} The amount should be {amount}. When can I expect it?",
        "Quick question about a refund. Order {order}, item: {product}, value {amount}. {pol} "
        "It has been almost two weeks since you confirmed the return on {past_day}. Please let me "
        "know the status or send me a reference number for the refund.",
        "Can you please process my refund? I sent the {product} (order {order}) back on "
        "{past_day}. {pol} My bank says there is no incoming credit of {amount} so far.",
    ],
    "shipping_delay": [
        "My order {order} ({product}) was supposed to arrive on {past_day} but it still has not "
        "shown up. {pol} It is now {days} days past the estimated delivery date. Can you find "
        "out where it is?",
        "I ordered the {product} and paid for standard shipping. Order number is {order}. The "
        "delivery estimate was {past_day}, which was {days} days ago. {pol} Is the parcel lost? "
        "If so, please send a replacement.",
        "Still waiting on order {order}. {pol} The {product} was meant to be a gift and the "
        "delivery is now {days} days late (it was promised for {past_day}). What is going on?",
        "Order {order} for a {product} hasn't arrived. Expected {past_day}, now {days} days "
        "late. {pol} Please advise whether I should wait or request a refund.",
    ],
    "login": [
        "I can't get into my {product} account. {pol} I keep getting the message \"{error_msg}\" "
        "after I enter my password. My login email is {email}. I tried on {device} too.",
        "Since yesterday I am locked out of the {product} app. The login screen says "
        "\"{error_msg}\". {pol} The account is registered to {email} and I am using {device}. "
        "Please help, I need my data.",
        "Login is broken for me: \"{error_msg}\" every single time. {pol} I have cleared the "
        "cache and reinstalled the {product} app on {device}. Account email: {email}.",
        "My {product} account ({email}) will not let me sign in. {pol} The app on {device} "
        "shows \"{error_msg}\". Can you unlock it or tell me what I am doing wrong?",
    ],
    "double_charge": [
        "I was charged twice for order {order}. My card statement shows two payments of {amount} "
        "on {past_day} for the {product}. {pol} Please refund the duplicate charge.",
        "There are two identical charges of {amount} on my credit card (ending {last4}) for "
        "order {order}. {pol} I only bought one {product}. Can you reverse one of them?",
        "Billing problem: {amount} was taken from my account twice on {past_day}. It is for "
        "the {product}, order {order}. {pol} Please check and refund the extra payment.",
        "Your system billed me double for order {order} - {amount} each time, card ending "
        "{last4}. {pol} I would like the second charge refunded as soon as possible.",
    ],
    "damaged_item": [
        "My {product} from order {order} arrived damaged today. {pol} The item itself has a "
        "crack along the side and I can't use it. I have photos if you need them. Could you send "
        "a replacement?",
        "The {product} I received (order {order}) is broken. {pol} There is a dent and "
        "scratches all over the front. I would like a replacement rather than a refund.",
        "Unfortunately order {order} came in damaged. {pol} The {product} does not look new at "
        "all and one part is snapped off. What do I need to do to get it replaced?",
        "Received the {product} today, order {order}. {pol} Sadly the product is damaged and "
        "not usable. Please let me know how to return it and get a new one.",
    ],
    "size_fit": [
        "I ordered the {product} in size {size} (order {order}). {pol} Could I exchange it for "
        "size {size2}? The tags are still on.",
        "About order {order}: {pol} I'd like to swap the {product} for size {size2} instead of the "
        "{size} I got. Do I need to pay for the return shipping?",
        "I bought the {product} in size {size}. {pol} Is it possible to get size {size2} instead? "
        "Order number {order}, unworn and in the original packaging.",
        "Size question on order {order}. {pol} I have the {product} in {size} and want to "
        "exchange it for {size2}. Please send me a return label.",
    ],
    "cancellation": [
        "Please cancel order {order} for the {product}. {pol} I found it cheaper elsewhere and "
        "would like the full amount of {amount} refunded.",
        "I would like to cancel my order {order} ({product}, {amount}). {pol} Please confirm "
        "the cancellation by email.",
        "I need to cancel {order}. {pol} I ordered the {product} by mistake. Can you stop "
        "it and refund the {amount}?",
        "Cancellation request for order {order}: {product}, total {amount}. {pol} Thanks for "
        "sorting this out quickly.",
    ],
    "address_change": [
        "I entered the wrong shipping address for order {order} ({product}). {pol} Please "
        "deliver it to {address} instead.",
        "Can you update the delivery address on order {order}? {pol} The new address is "
        "{address}. The {product} is for my office.",
        "I just moved and forgot to change my address before ordering the {product}. Order "
        "{order}. {pol} Correct address: {address}.",
        "Address change for order {order}, please. {pol} Ship the {product} to {address} "
        "rather than my old place.",
    ],
    "warranty": [
        "My {product} stopped working after {months} months. Order {order}. {pol} It does not "
        "turn on at all anymore, even with a different cable. How do I make a warranty claim?",
        "I'd like to file a warranty claim for my {product} (order {order}). {pol} After "
        "{months} months of normal use it started {symptom}. What are the next steps?",
        "My {product} has been {symptom} for a week. I bought it {months} months ago "
        "(order {order}). {pol} Can you repair or replace it?",
        "Warranty question: the {product} from order {order} is {symptom}. {pol} I have had it "
        "for {months} months and always used it as described in the manual.",
    ],
    "bug_report": [
        "Since the latest update the {feature} in the {product} app crashes with error "
        "{error_code}. {pol} I'm on {device}. Steps: open the app, go to {feature}, tap save.",
        "Found a bug: {feature} fails with {error_code} every time I try it. {pol} Device: "
        "{device}. This used to work fine before last week's {product} update.",
        "The {feature} in {product} is broken for me. I get error {error_code} and the screen "
        "goes blank. {pol} Using {device}. Happy to send logs if that helps.",
        "Bug report: {product} -> {feature} shows {error_code}. {pol} Reproducible every time "
        "on {device}. Please fix, I rely on this daily.",
    ],
    "feature_request": [
        "It would be great if the {product} app let me {wish}. {pol} I use it every day on "
        "{device} and this is the one thing I keep missing.",
        "Feature suggestion for {product}: please let us {wish}. {pol} Several people on my "
        "team have asked for this as well.",
        "Any plans to let users {wish} in {product}? {pol} Right now I have to work around it "
        "manually, which takes time every week.",
        "I love {product}, but I really wish I could {wish}. {pol} Is this on the roadmap?",
    ],
    "invoice_request": [
        "Could you send me an invoice for order {order}? The total was {amount} for the "
        "{product}. {pol} The company name is {company}.",
        "I need a proper invoice (not just the order confirmation) for order {order}, amount "
        "{amount}. {pol} Please address it to {company}.",
        "For our accounting I need an invoice for the {product} we bought, order {order}, "
        "{amount}. {pol} Company: {company}.",
        "Please email me the invoice for {order} ({product}, {amount}). {pol} It should be made "
        "out to {company}.",
    ],
}
# Subscription wordings replace the order-based ones where those make no sense.
SUBSCRIPTION_BODIES = {
    "cancellation": [
        "Please cancel my {product} subscription (order {order}) at the end of the current "
        "period. {pol} I was charged {amount} for the last renewal.",
        "I want to stop my {product} plan, order {order}. {pol} Please make sure I'm not "
        "billed the {amount} again next month.",
        "Cancel my {product} account, please. Order reference {order}, last payment {amount}. "
        "{pol} Thanks for the service so far.",
        "How do I cancel {product}? I couldn't find the button in settings. Order {order}, "
        "{amount} per period. {pol}",
    ],
}

# Sentences a hard negative can flip: (affirmative wordings, negated wordings), index-aligned.
POLARITY = {
    "refund": (
        ["I have already shipped the item back.", "The item is already on its way back to you."],
        ["I have not shipped the item back yet.", "The item is not on its way back to you yet."],
    ),
    "shipping_delay": (
        ["The tracking page shows the parcel at the local depot.",
         "Tracking says it reached the local depot."],
        ["The tracking page does not show the parcel at the local depot.",
         "Tracking says it never reached the local depot."],
    ),
    "login": (
        ["I can reset my password without problems.", "The password reset itself works."],
        ["I cannot reset my password either.", "The password reset does not work either."],
    ),
    "double_charge": (
        ["I did place two orders that day.", "There were two orders from me that day."],
        ["I did not place two orders.", "There was only one order from me that day."],
    ),
    "damaged_item": (
        ["The outer box was damaged too.", "The packaging was also crushed."],
        ["The outer box was not damaged.", "The packaging was not crushed at all."],
    ),
    "size_fit": (
        ["Size {size} fits {fit_area}.", "The {size} fits me {fit_area}."],
        ["Size {size} does not fit {fit_area}.", "The {size} does not fit me {fit_area}."],
    ),
    "cancellation": (
        ["I have already received a shipping confirmation.",
         "Your shipping confirmation already came in."],
        ["I have not received a shipping confirmation yet.",
         "No shipping confirmation has come in yet."],
    ),
    "address_change": (
        ["The order has already shipped.", "It says the parcel is already in transit."],
        ["The order has not shipped yet.", "It says the parcel is not in transit yet."],
    ),
    "warranty": (
        ["The unit is still under warranty.", "It is still covered by the warranty."],
        ["The unit is no longer under warranty.", "It is no longer covered by the warranty."],
    ),
    "bug_report": (
        ["The same thing happens on the web version.", "The web version has the same bug."],
        ["The same thing does not happen on the web version.",
         "The web version does not have this bug."],
    ),
    "feature_request": (
        ["I would pay extra for this.", "I'd happily pay more for it."],
        ["I would not pay extra for this.", "I would not pay more for it."],
    ),
    "invoice_request": (
        ["The invoice must include our VAT number {vat}.",
         "Please put our VAT number {vat} on it."],
        ["The invoice does not need our VAT number.", "Please do not put our VAT number on it."],
    ),
}
SUBSCRIPTION_POLARITY = {
    "cancellation": (
        ["Please keep my stored files after the cancellation.",
         "I want my files kept after I cancel."],
        ["Please do not keep my stored files after the cancellation.",
         "I do not want my files kept after I cancel."],
    ),
}

FIRST_NAMES = [
    "Dana", "Marcus", "Priya", "Tomás", "Elena", "Kenji", "Aisha", "Lukas", "Sofia", "Owen",
    "Mei", "Rafael", "Hannah", "Jonas", "Chloé", "Ibrahim", "Grace", "Mateo", "Yuki", "Nora",
]
LAST_NAMES = [
    "Whitfield", "Okafor", "Shah", "García", "Novak", "Tanaka", "Rahman", "Becker", "Rossi",
    "Murphy", "Chen", "Silva", "Müller", "Larsen", "Dubois", "Haddad", "Kim", "Fernández",
]
MAIL_DOMAINS = ["gmail.com", "outlook.com", "proton.me", "yahoo.com"]
AGENTS = ["Sam", "Jordan", "Alex", "Robin", "Taylor", "Casey"]
COMPANIES = [
    "Brightline Logistics GmbH", "Harbor & Pine LLC", "Kestrel Design Studio", "Orbis Health Ltd",
    "Bluefin Analytics BV", "Juniper Legal LLP", "Tallgrass Farms Inc.",
]
CITIES = [
    "Portland, OR 97205", "Austin, TX 78701", "Denver, CO 80202", "Madison, WI 53703",
    "Raleigh, NC 27601", "Boise, ID 83702",
]
STREETS = ["Maple Ave", "Harbor St", "Elm Street", "Juniper Rd", "Lakeview Dr", "Oak Lane"]
DEVICES = [
    "an iPhone 14 (iOS 17.5)", "a Pixel 7 (Android 14)", "Chrome on Windows 11",
    "Safari on macOS Sonoma", "a Galaxy S23", "an iPad Air",
]
ERRORS = [
    ("E-4012", "Invalid credentials"), ("E-5003", "Session expired, please sign in again"),
    ("E-2210", "Too many attempts, try again later"), ("E-4409", "Account temporarily locked"),
]
FEATURES = {
    "HearthTemp smart thermostat": ["schedule editor", "away mode", "energy report"],
    "PulseBand 2 fitness tracker": ["sleep tracking", "workout sync", "heart rate chart"],
    "CloudVault Pro": ["file sharing", "folder sync", "version history"],
}
WISHES = [
    ("export my data to CSV", "CSV export"), ("use a dark mode", "dark mode"),
    ("share with family members", "family sharing"), ("set weekly goals", "weekly goals"),
    ("log in with a passkey", "passkey login"), ("get a monthly summary email", "monthly summary"),
]
SYMPTOMS = [
    "flickering", "making a loud rattling noise", "overheating", "turning off by itself",
    "not holding a charge",
]
SIZES = {"TrailRunner 3 running shoes": ["US 8", "US 9", "US 10", "US 11"]}
GENERIC_SIZES = ["S", "M", "L", "XL"]
FIT_AREAS = {
    "TrailRunner 3 running shoes": "at the toes",
    "Summit Shell jacket": "around the shoulders",
    "Nomad 40L backpack": "at the hip belt",
}

GREETINGS = ["Hi,", "Hello,", "Hi there,", "Dear Northpeak team,", "Hey,", "Good morning,", ""]
OPENERS = ["Hope you are well.", "I hope someone can help me with this.", "", "", ""]
REPLY_OPENERS = ["Thanks for getting back to me.", "Thanks for the quick reply.", ""]
FILLERS = [
    "This is the second time I am writing about this.",
    "I have been a customer for years and this has never happened before.",
    "I would appreciate a quick answer.",
    "Please let me know if you need anything else from me.",
    "I already tried the help center but could not find an answer.",
    "My partner had the same issue last month, so it might not be just me.",
    "I'm travelling next week, so email is the best way to reach me.",
    "Happy to jump on a call if that is easier.",
    "Not urgent, but I'd like it sorted this week.",
    "Your chat was closed when I tried earlier.",
]
FEATURE_FILLERS = [
    "Please let me know if you need anything else from me.",
    "I already tried the help center but could not find an answer.",
    "Happy to jump on a call if that is easier.",
    "A friend of mine uses a competitor's app that already has this.",
    "Keep up the good work otherwise!",
    "Thanks for considering it.",
]
CLOSINGS = [
    "Thanks,", "Thank you,", "Best regards,", "Kind regards,", "Cheers,", "Thanks in advance,",
]
DISCLAIMERS = [
    "CONFIDENTIALITY NOTICE: This e-mail and any attachments are confidential and intended only "
    "for the addressee. If you received it in error, please delete it.",
    "Sent from my iPhone",
    "Get Outlook for Android",
    "Please consider the environment before printing this email.",
]
AGENT_LINES = [
    "Thanks for reaching out. Could you confirm the order number so we can look into this?",
    "We're sorry to hear that. Can you tell us a bit more about what happened?",
    "Thank you for your message. We have forwarded this to the responsible team.",
]


HARD_NEGATIVE_KINDS = ("amount", "negation", "order", "product")


def normalise(text: str) -> str:
    """NFKC, case-folded, whitespace-collapsed text: what a normalised hash would see."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


@dataclass(frozen=True)
class Spec:
    """Everything that decides one ticket's text; rendering it involves no randomness."""

    issue: str
    product: str
    slots: dict[str, str]
    negated: bool
    wording: int
    pol_wording: int
    subject_wording: int
    channel: str
    tier: str
    created_at: dt.date
    greeting: str = ""
    opener: str = ""
    fillers: tuple[str, ...] = ()
    closing: str = ""
    signature: tuple[str, ...] = ()
    disclaimer: str = ""
    quoted: tuple[str, ...] = ()
    lowercase: bool = False

    def bodies(self) -> list[str]:
        kind = PRODUCTS[self.product]
        if kind == "subscription" and self.issue in SUBSCRIPTION_BODIES:
            return SUBSCRIPTION_BODIES[self.issue]
        return BODIES[self.issue]

    def polarity(self) -> tuple[list[str], list[str]]:
        kind = PRODUCTS[self.product]
        if kind == "subscription" and self.issue in SUBSCRIPTION_POLARITY:
            return SUBSCRIPTION_POLARITY[self.issue]
        return POLARITY[self.issue]


def fmt_amount(cents: int) -> str:
    return f"${cents // 100:,}.{cents % 100:02d}"


def render(spec: Spec) -> tuple[str, str]:
    """(subject, body) of `spec`."""
    slots = {**spec.slots, "product": spec.product, "fit_area": FIT_AREAS.get(spec.product, "")}
    pos, neg = spec.polarity()
    pol = (neg if spec.negated else pos)[spec.pol_wording].format(**slots)
    core = spec.bodies()[spec.wording].format(pol=pol, **slots)
    subject = SUBJECTS[spec.issue][spec.subject_wording].format(**slots)
    middle = " ".join(s for s in (spec.opener, core, *spec.fillers) if s)
    if spec.lowercase:  # chat users who never press shift
        middle = middle.lower()
    parts = [p for p in (spec.greeting, middle) if p]
    sign = "\n".join(p for p in (spec.closing, *spec.signature) if p)
    if sign:
        parts.append(sign)
    if spec.disclaimer:
        parts.append(spec.disclaimer)
    if spec.quoted:
        parts.append("\n".join(spec.quoted))
    return subject, "\n\n".join(parts)


def ascii_name(name: str) -> str:
    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()


def word_count(text: str) -> int:
    return len(text.split())


class Generator:
    """Draws ticket specs from one seeded `random.Random`."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.used_orders: set[str] = set()

    def order_number(self) -> str:
        while True:
            digits = self.rng.randint(1_000_000, 9_999_999)
            number = f"#{digits}" if self.rng.random() < 0.6 else f"NP-{digits}"
            if number not in self.used_orders:
                self.used_orders.add(number)
                return number

    def slots(self, product: str, created_at: dt.date) -> dict[str, str]:
        r = self.rng
        first, last = r.choice(FIRST_NAMES), r.choice(LAST_NAMES)
        sizes = SIZES.get(product, GENERIC_SIZES)
        i = r.randrange(len(sizes))
        code, msg = r.choice(ERRORS)
        wish, wish_short = r.choice(WISHES)
        days = r.randint(3, 16)
        past = created_at - dt.timedelta(days=days)
        return {
            "order": self.order_number(),
            "amount": fmt_amount(r.choice(PRICES[product])),
            "past_day": f"{past:%B} {past.day}",
            "days": str(days),
            "email": f"{ascii_name(first)}.{ascii_name(last)}@{r.choice(MAIL_DOMAINS)}",
            "device": r.choice(DEVICES),
            "error_code": code,
            "error_msg": msg,
            "last4": f"{r.randint(0, 9999):04d}",
            "size": sizes[i],
            "size2": sizes[(i + 1) % len(sizes)],
            "address": f"{r.randint(12, 4999)} {r.choice(STREETS)}, {r.choice(CITIES)}",
            "months": str(r.randint(3, 22)),
            "symptom": r.choice(SYMPTOMS),
            "feature": r.choice(FEATURES.get(product, ["settings page"])),
            "wish": wish,
            "wish_short": wish_short,
            "company": r.choice(COMPANIES),
            "vat": f"DE{r.randint(100_000_000, 999_999_999)}",
            "first": first,
            "last": last,
        }

    def envelope(self, spec: Spec) -> Spec:
        """Greeting, fillers, signature, disclaimer and quoted reply around the request."""
        r = self.rng
        first, last = spec.slots["first"], spec.slots["last"]
        greeting = "" if spec.channel == "chat" and r.random() < 0.6 else r.choice(GREETINGS)
        pool = FILLERS if spec.issue != "feature_request" else FEATURE_FILLERS
        fillers = tuple(r.sample(pool, r.choice([0, 1, 1, 2, 3])))
        opener = r.choice(OPENERS)
        closing, signature, disclaimer, quoted = "", (), "", ()
        if spec.channel == "chat":
            closing = r.choice(["thx", "thanks!", ""])
        elif spec.channel == "web":
            closing = r.choice(CLOSINGS)
            signature = (f"{first} {last}", f"(submitted via {COMPANY.lower()}.example/help)")
        else:
            closing = r.choice(CLOSINGS)
            if spec.tier == "enterprise" or r.random() < 0.3:
                company = spec.slots["company"]
                phone = f"+1 (555) {r.randint(100, 999)}-{r.randint(1000, 9999)}"
                signature = ("-- ", f"{first} {last}", f"Operations | {company}", phone)
            else:
                signature = (first,)
            if r.random() < 0.35:
                disclaimer = r.choice(DISCLAIMERS)
            if r.random() < 0.3:
                when = spec.created_at - dt.timedelta(days=r.randint(1, 4))
                hour, minute = r.randint(8, 18), r.randint(0, 59)
                opener = r.choice(REPLY_OPENERS)
                quoted = (
                    f"> On {when:%a}, {when.day} {when:%b %Y} at {hour:02d}:{minute:02d}, "
                    f"{SUPPORT} wrote:",
                    f"> Hi {first},",
                    f"> {r.choice(AGENT_LINES)}",
                    f"> Best, {r.choice(AGENTS)}",
                )
        spec = replace(
            spec, greeting=greeting, opener=opener, fillers=fillers, closing=closing,
            signature=signature, disclaimer=disclaimer, quoted=quoted,
            lowercase=spec.channel == "chat" and r.random() < 0.3,
        )
        return fit_length(spec)

    def original(self) -> Spec:
        r = self.rng
        issue = r.choice(sorted(ISSUE_KINDS))
        product = r.choice([p for p, k in PRODUCTS.items() if k in ISSUE_KINDS[issue]])
        created_at = START_DATE + dt.timedelta(days=r.randrange(SPAN_DAYS))
        spec = Spec(
            issue=issue,
            product=product,
            slots=self.slots(product, created_at),
            negated=r.random() < 0.5,
            wording=r.randrange(4),
            pol_wording=r.randrange(2),
            subject_wording=r.randrange(4),
            channel=r.choices(["email", "chat", "web"], weights=[5, 3, 2])[0],
            tier=r.choices(["free", "pro", "enterprise"], weights=[5, 3, 2])[0],
            created_at=created_at,
        )
        return self.envelope(spec)

    def paraphrase(self, source: Spec) -> Spec:
        """The same request (same slots and polarity) in another wording and envelope."""
        r = self.rng
        spec = replace(
            source,
            wording=r.choice([i for i in range(4) if i != source.wording]),
            pol_wording=1 - source.pol_wording,
            subject_wording=r.choice([i for i in range(4) if i != source.subject_wording]),
            channel=r.choice(["email", "chat", "web"]),
            created_at=source.created_at + dt.timedelta(days=r.randint(0, 6)),
        )
        return self.envelope(spec)

    def hard_negative(self, source: Spec, prefer: str) -> Spec:
        """`source` with one fact changed (`prefer` if it applies); wording and envelope stay."""
        r = self.rng
        kinds = [k for k in HARD_NEGATIVE_KINDS if k != prefer]
        r.shuffle(kinds)
        kinds.insert(0, prefer)
        later = source.created_at + dt.timedelta(days=r.randint(0, 10))
        for kind in kinds:
            spec = replace(source, created_at=later)
            if kind == "order":
                spec = replace(spec, slots={**spec.slots, "order": self.order_number()})
            elif kind == "amount":
                spec = replace(spec, slots={**spec.slots, "amount": other_amount(spec)})
            elif kind == "product":
                others = [p for p in PRODUCTS if swappable(spec, p)]
                if not others:
                    continue
                spec = replace(spec, product=r.choice(others))
            else:
                spec = replace(spec, negated=not spec.negated)
            if normalise("\n".join(render(spec))) != normalise("\n".join(render(source))):
                return spec
        raise AssertionError(f"no hard negative possible for {source.issue}")


def swappable(spec: Spec, product: str) -> bool:
    """Whether `product` can stand in for `spec.product` without the text turning odd."""
    if product == spec.product or PRODUCTS[product] != PRODUCTS[spec.product]:
        return False
    if spec.issue == "size_fit":
        return SIZES.get(product) == SIZES.get(spec.product)
    return spec.issue != "bug_report"  # features are product-specific


def other_amount(spec: Spec) -> str:
    """$20.00 -> $200.00, $249.00 -> $24.90: one digit off, a different request."""
    cents = int(spec.slots["amount"].strip("$").replace(",", "").replace(".", ""))
    return fmt_amount(cents * 10 if cents < 10_000 else cents // 10)


def fit_length(spec: Spec) -> Spec:
    """Drop boilerplate (or add fillers) until the body has 40-150 words."""
    while word_count(render(spec)[1]) > 150:
        if spec.quoted:
            spec = replace(spec, quoted=())
        elif spec.disclaimer:
            spec = replace(spec, disclaimer="")
        elif spec.fillers:
            spec = replace(spec, fillers=spec.fillers[:-1])
        else:
            spec = replace(spec, opener="")
            break
    pool = FILLERS if spec.issue != "feature_request" else FEATURE_FILLERS
    extra = [f for f in pool if f not in spec.fillers]
    while word_count(render(spec)[1]) < 40:
        spec = replace(spec, fillers=(*spec.fillers, extra.pop(0)))
    return spec


def to_fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def near_copy(rng: random.Random, subject: str, body: str) -> tuple[str, str]:
    """`subject`/`body` with differences a normalised hash (NFKC, casefold, spaces) ignores."""
    edits = rng.sample(["spaces", "trailing", "case", "fullwidth", "nbsp", "subject_case"], 2)
    for edit in edits:
        if edit == "spaces":
            words = body.split(" ")
            for i in sorted(rng.sample(range(len(words)), min(3, len(words)))):
                words[i] = words[i] + " "
            body = " ".join(words)
        elif edit == "trailing":
            body = body + rng.choice(["\n", "\n\n", "  ", " \n"])
            subject = " " + subject
        elif edit == "case":
            body = body.upper() if rng.random() < 0.2 else body.lower()
        elif edit == "fullwidth":
            words = body.split(" ")
            candidates = [i for i, w in enumerate(words) if any(c.isdigit() for c in w)] or [0]
            i = rng.choice(candidates)
            words[i] = to_fullwidth(words[i])
            body = " ".join(words)
        elif edit == "nbsp":
            body = body.replace(" ", "\u00a0", rng.randint(1, 4))
        else:
            subject = subject.upper() if rng.random() < 0.5 else subject.lower()
    return subject, body


def build(seed: int = SEED, n: int = N_TICKETS) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(tickets, labels) frames; the same seed always gives the same frames."""
    gen = Generator(seed)
    rng = gen.rng
    counts = {rel: round(share * n) for rel, share in SHARES.items()}
    counts = {"original": n - sum(counts.values()), **counts}

    rows: list[dict] = []  # ticket fields plus "source" (row index) and "relation"
    seen: set[str] = set()

    def add(spec: Spec, subject: str, body: str, relation: str, source: int | None) -> None:
        rows.append({
            "spec": spec, "subject": subject, "body": body, "relation": relation, "source": source,
        })

    while len(rows) < counts["original"]:
        spec = gen.original()
        subject, body = render(spec)
        key = normalise(subject + "\n" + body)
        if key not in seen:
            seen.add(key)
            add(spec, subject, body, "original", None)
    originals = list(range(len(rows)))

    plan = [rel for rel in ("exact", "near", "paraphrase", "hard_negative")
            for _ in range(counts[rel])]
    for n_planned, relation in enumerate(plan):
        prefer = HARD_NEGATIVE_KINDS[n_planned % len(HARD_NEGATIVE_KINDS)]
        while True:
            src = rng.choice(originals)
            source = rows[src]
            spec: Spec = source["spec"]
            if relation == "exact":
                later = spec.created_at + dt.timedelta(days=rng.randint(0, 5))
                add(replace(spec, created_at=later), source["subject"], source["body"],
                    relation, src)
                break
            if relation == "near":
                subject, body = near_copy(rng, source["subject"], source["body"])
                if (subject, body) == (source["subject"], source["body"]):
                    continue
                later = spec.created_at + dt.timedelta(days=rng.randint(0, 5))
                add(replace(spec, created_at=later), subject, body, relation, src)
                break
            if relation == "paraphrase":
                new = gen.paraphrase(spec)
            else:
                new = gen.hard_negative(spec, prefer)
            subject, body = render(new)
            key = normalise(subject + "\n" + body)
            if key not in seen:
                seen.add(key)
                add(new, subject, body, relation, src)
                break

    # Ids follow creation order, so a copy never has a smaller id than its source.
    order = sorted(
        range(len(rows)),
        key=lambda i: (rows[i]["spec"].created_at, rows[i]["source"] is not None, i),
    )
    ids: dict[int, str] = {}
    number = rng.randint(1000, 1500)
    for i in order:
        ids[i] = f"T-{number:06d}"
        number += rng.choice([1, 1, 1, 2, 3])

    tickets = pl.DataFrame(
        {
            "ticket_id": [ids[i] for i in order],
            "created_at": [rows[i]["spec"].created_at for i in order],
            "channel": [rows[i]["spec"].channel for i in order],
            "product": [rows[i]["spec"].product for i in order],
            "customer_tier": [rows[i]["spec"].tier for i in order],
            "subject": [rows[i]["subject"] for i in order],
            "body": [rows[i]["body"] for i in order],
        },
        schema={
            "ticket_id": pl.String, "created_at": pl.Date, "channel": pl.String,
            "product": pl.String, "customer_tier": pl.String, "subject": pl.String,
            "body": pl.String,
        },
    )
    labels = pl.DataFrame(
        {
            "ticket_id": [ids[i] for i in order],
            "source_ticket_id": [
                None if rows[i]["source"] is None else ids[rows[i]["source"]] for i in order
            ],
            "relation": [rows[i]["relation"] for i in order],
        },
        schema={"ticket_id": pl.String, "source_ticket_id": pl.String, "relation": pl.String},
    )
    return tickets, labels


def write_atomic(frame: pl.DataFrame, path: Path) -> None:
    """Write `frame` to `path` via a temp file in the same directory and a rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        frame.write_parquet(tmp, statistics=False)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; these files are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    tickets, labels = build(args.seed)
    write_atomic(tickets, args.out_dir / "tickets.parquet")
    write_atomic(labels, args.out_dir / "tickets_labels.parquet")
    counts = Counter(labels["relation"].to_list())
    print(f"wrote {tickets.height} tickets to {args.out_dir}")
    for relation in ("original", "exact", "near", "paraphrase", "hard_negative"):
        print(f"  {relation:<14} {counts[relation]:>4}  ({counts[relation] / tickets.height:.0%})")


if __name__ == "__main__":
    main()
