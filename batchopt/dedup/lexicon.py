"""Word lists and token patterns for the fact guards (`facts.py`, `swaps.py`): months, weekdays,
number words, negations, opposite pairs, request actions, words that name nothing, currencies;
lower case."""

from __future__ import annotations


def _set(text: str) -> frozenset[str]:
    return frozenset(text.split())


def _list(text: str, sep: str | None = None) -> list[str]:
    return text.split(sep)


MONTHS = {
    m: i % 12 + 1
    for i, m in enumerate(
        _list(
            "january february march april may june july august september october november "
            "december jan feb mar apr may jun jul aug sep oct nov dec"
        )
    )
} | {"sept": 9}
# Standalone month words; "may" and the abbreviations count only next to a day or a year.
MONTH_WORDS = {w for w in MONTHS if len(w) > 4 or w in ("june", "july")} - {"may"}
WEEKDAYS = _list("monday tuesday wednesday thursday friday saturday sunday")
DATE_WORDS = (
    {d: d for d in WEEKDAYS}
    | {d + "s": d for d in WEEKDAYS}
    | {"today": "today", "tonight": "today", "tomorrow": "tomorrow", "yesterday": "yesterday"}
    | {"weekend": "weekend"}
)
NUMBER_WORDS = dict(
    zip(
        _list(
            "one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
            "fifteen twenty thirty forty fifty hundred thousand twice thrice dozen once double "
            "triple"
        ),
        _list("1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 20 30 40 50 100 1000 2 3 12 1 2 3"),
        strict=True,
    )
)
# Typos of the multiplying words ("tiwce"): one neighbouring swap, the first letter kept. Only
# these, whose swaps are no words ("there" is a swap of "three").
MISSPELT_NUMBERS = {
    swap: NUMBER_WORDS[word] for word in ("twice", "thrice", "double", "triple") for swap in
    [word[:i] + word[i + 1] + word[i] + word[i + 2 :] for i in range(1, len(word) - 1)]
    if swap != word
}  # fmt: skip
# "the other one", "a new one": a pronoun, not a quantity.
ONE_PRONOUN_AFTER = _set(
    "the this that a an any each every which another no new other same right wrong only last "
    "old next correct replacement first second broken working bigger smaller larger cheaper "
    "good extra duplicate spare original defective faulty damaged"
)
NEGATIONS = _set(
    "not no never none nothing nobody nowhere neither nor without cannot unable noone dont "
    "doesnt didnt cant couldnt wont wouldnt shouldnt isnt arent wasnt werent havent hasnt hadnt "
    "aint mustnt neednt"
)
# Opposite pairs that embeddings put close ("too big"/"too small": cosine 0.97 with MiniLM),
# as word -> "<pair><side>".
OPPOSITES = {
    word: f"{i}{sign}"
    for i, pair in enumerate(
        _list(
            "big bigger biggest large larger/small smaller smallest tiny|tight tighter/loose "
            "looser|long longer/short shorter|wide wider/narrow narrower|thick thicker/thin "
            "thinner|early earlier/late later|before/after|add adding added/remove removing "
            "removed|upgrade upgrading upgraded/downgrade downgrading downgraded|increase "
            "increased/decrease decreased reduce reduced|more/less fewer|higher/lower|bright "
            "brighter/dim dimmer|hot hotter warm warmer/cold colder cool cooler|loud louder/quiet "
            "quieter|fast faster quick quicker/slow slower|cheap cheaper/expensive pricier|enable "
            "enabled/disable disabled|activate activated/deactivate deactivated|lock locked/unlock "
            "unlocked|subscribe subscribed/unsubscribe unsubscribed|include included/exclude "
            "excluded|buy buying/sell selling|upload uploaded/download downloaded|left/right|"
            "top/bottom|inside/outside|above/below|maximum max/minimum min|full/empty|wet/dry|"
            "new/old|same/different|overcharged/undercharged|pause paused/resume resumed",
            "|",
        )
    )
    for sign, side in zip("+-", pair.split("/"), strict=True)
    for word in side.split()
}
# A typo hides an opposite from an exact lookup ("dwongrade", "eralier"): words of 6+ letters
# one edit away (a shared deletion of one letter after the first) count too.
_FUZZY: dict[str, str] = {}
for _word, _side in OPPOSITES.items():
    if len(_word) >= 6:
        for _i in range(2, len(_word) + 1):
            _FUZZY.setdefault(_word[: _i - 1] + _word[_i:], _side)
        _FUZZY.setdefault(_word, _side)


def misspelt_opposite(word: str) -> str | None:
    """The opposite-pair side of `word` if it is a typo of an opposite word, else None: one
    letter dropped or swapped in a word of 6+ letters, two letters swapped in one of 5."""
    if len(word) < 5 or not word.isalpha():
        return None
    if len(word) == 5:
        return next((OPPOSITES[w] for w in _swaps(word) if w in OPPOSITES), None)
    for i in range(2, len(word) + 1):
        side = _FUZZY.get(word[: i - 1] + word[i:])
        if side is not None:
            return side
    return _FUZZY.get(word)


def _swaps(word: str) -> list[str]:
    """`word` with two neighbouring letters swapped, the first letter kept ("ltaer" -> "later")."""
    return [word[:i] + word[i + 1] + word[i] + word[i + 2 :] for i in range(1, len(word) - 1)]


# What a request asks for, as word-stem families: "pick up order #5 in Austin" and "ship order #5
# to Austin" state the same facts and sit at cosine 0.82 with MiniLM, but ask for different
# things. A stem matches the start of a word ("cancel" matches "cancelled"); see `action_of`.
ACTIONS = {
    stem: family
    for family, stems in (
        ("cancel", "cancel terminat"),
        ("refund", "refund reimburs chargeback"),
        ("return", "return"),
        ("exchange", "exchang swap replac"),
        ("pickup", "pickup pick collect store shop location"),
        ("delivery", "ship deliver redirect reroute dispatch courier"),
        ("address", "address"),
        ("reschedule", "reschedul postpon"),
        ("track", "track"),
        ("charge", "charg bill"),
        ("duplicate", "twice double duplicat"),
        ("price", "price cost"),
        ("invoice", "invoic receipt"),
        ("login", "password login passcode username"),
        ("stock", "stock restock"),
        ("repair", "repair"),
        ("fit", "fit fits fitting compatib"),
        ("warranty", "warrant guarante"),
        ("discount", "promo coupon voucher discount"),
        ("close", "close closing resolv"),
        ("more", "extra additional"),  # "send 10 extra units" is no "exchange for a size 10"
        ("power", "power boot"),  # "doesn't power on" is no "doesn't fit"
    )
    for stem in stems.split()
}
# Whole words (no stem, no typo) that say whether something already happened or is awaited:
# "Got the money back for order 5, all good" and "When will I get my money back for order 5?"
# sit at cosine 0.85 with the model2vec model; one reports, the other asks.
ACTION_WORDS = {
    word: family
    for family, words in (
        ("done", "received recieved arrived got confirming confirm"),
        ("awaited", "when waiting still where where's wheres status happening"),
    )
    for word in words.split()
}
_STEM_LENGTHS = sorted({len(stem) for stem in ACTIONS}, reverse=True)


def action_of(word: str) -> str | None:
    """The request family a lower-case word belongs to, typos of one swap included (a swap
    counts only against a stem of 4+ letters: "filter" is no typo of "fit...")."""
    if word in ACTION_WORDS:
        return ACTION_WORDS[word]
    if len(word) >= 6:  # "arrvied": a whole word with one swap
        swapped = next((w for w in _swaps(word) if w in ACTION_WORDS), None)
        if swapped is not None:
            return ACTION_WORDS[swapped]
    for candidate in (word, *(_swaps(word) if len(word) >= 5 else ())):
        for size in _STEM_LENGTHS:
            family = ACTIONS.get(candidate[:size]) if len(candidate) >= size else None
            if family is not None and (size >= 4 or candidate is word):
                return family
    return None


# Capitalised words that name nothing: pronoun, greetings, sign-offs, titles, fillers.
NOT_ENTITIES = _set(
    "i i'm i've i'd i'll im ive hi hello hey dear thanks thank regards cheers please sincerely "
    "best kind team support sir madam mr mrs ms dr ok okay yes a asap fyi pls plz thx btw "
    "customer service hiya greetings morning afternoon evening good re fw fwd subject sku id "
    "ref pdf otp pin eta vat"
)
# Function words that name nothing even when capitalised mid-sentence ("Hi, My order ...").
OPENERS = _set(
    "my our your the this that these those a an his her their its is are was were can could "
    "would will should do does did has have had why what when where how who which so and but "
    "also just still we you it there here if"
)
# Words the swap guard never counts as what two texts differ in: greetings, sign-offs, pronouns,
# articles, prepositions, auxiliaries, fillers ("I need it" / "we need this": no other request).
FUNCTION_WORDS = NOT_ENTITIES | _set(
    "there advance help me us you him them we they it he she is are was were be been being am "
    "do does did doing have has had having can could would will should shall may might must "
    "to of in on at for from with by about as into onto over under up down out off than then "
    "so and or but if because while until again also just very too really any some all each "
    "every other another such own what which who whom whose why how yes get make made need "
    "needed want wanted like let i'm i've i'd i'll it's that's there's what's can't don't "
    "doesn't won't isn't now yet already ago way much lot lots news great fine well able my our "
    "your his her their its the this that these those a an one"
)
CURRENCIES = {
    word: code
    for code, words in (
        ("usd", "$ us$ usd dollar dollars bucks"),
        ("eur", "€ eur euro euros"),
        ("gbp", "£ gbp pound pounds quid"),
        ("jpy", "¥ jpy yen"),
        ("inr", "₹ inr rupees"),
        ("cad", "ca$ c$ cad"),
        ("aud", "a$ au$ aud"),
        ("chf", "chf"),
        ("usd/100", "cent cents"),
    )
    for word in words.split()
}

NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+\.\d+"
_CUR_PRE = r"us\$|ca\$|c\$|au\$|a\$|[$€£¥₹]|(?:usd|eur|gbp|cad|aud|chf|jpy|inr)\b"
_CUR_POST = (
    r"[$€£¥₹]|(?:usd|eur|gbp|cad|aud|chf|jpy|inr|dollars?|bucks|euros?|pounds?|quid|yen"
    r"|rupees|cents?)\b"
)
_MON = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
ORD = r"(?:st|nd|rd|th)"
# Token kinds in priority order. No look-around, so the same pattern runs in Python's `re` and,
# for batches, in polars' Rust regex (about 20x faster); the first kind that matches wins.
KINDS = (
    ("url", r"(?:https?://|www\.)[^\s<>\"']+"),
    ("email", r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),
    ("iso", r"\b\d{4}-\d{1,2}-\d{1,2}\b"),
    ("numdate", r"\b\d{1,2}/\d{1,2}(?:/\d{2,4})?\b|\b\d{1,2}\.\d{1,2}\.\d{2,4}\b"),
    ("time", r"\b\d{1,2}(?::\d{2})?\s?(?:[ap]m\b|[ap]\.m\.)|\b\d{1,2}:\d{2}\b"),
    ("amount_pre", rf"(?:{_CUR_PRE})\s?(?:{NUM}|\d+)(?:\s?k\b)?"),
    ("amount_post", rf"\b(?:{NUM}|\d+)(?:\s?k)?\s?(?:{_CUR_POST})"),
    ("month_day", rf"\b{_MON}\.?\s+\d{{1,2}}{ORD}?\b(?:,?\s+\d{{4}}\b)?"),
    ("day_month", rf"\b\d{{1,2}}{ORD}?\s+(?:of\s+)?{_MON}\b\.?(?:,?\s+\d{{4}}\b)?"),
    ("month_year", rf"\b{_MON}\.?\s+\d{{4}}\b"),
    ("num_abbr", r"\b(?:no|nr|num)\.?\s*#?\d+\b"),
    ("number", NUM),
    ("token", r"\w+(?:'[^\W\d_]+)*(?:[-_/]\w+)*"),  # word, plain number, ordinal or code
    ("stop", r"[.!?;:\n]+"),
)
TOKEN_PATTERN = "(?i)" + "|".join(f"(?:{pattern})" for _, pattern in KINDS)
