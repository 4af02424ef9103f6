"""A labelled stream of ten years, generated (seeded, so always the same):
40 small stories spread over 2015-2025, each of 3 to 6 articles published
within a day by different outlets, every story about its own event in its
own city (so the stories are trivially separable), and a syndicated reprint
in every fifth story. Rows as the shared streams hold them (with ``gold``)."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

CITIES = ["Aberdeen", "Bratislava", "Cordoba", "Dunedin", "Esbjerg", "Fukuoka", "Galway", "Hobart", "Izmir",
          "Jaipur", "Kaunas", "Leipzig", "Mombasa", "Nantes", "Oulu", "Porto", "Quito", "Rosario", "Sapporo",
          "Tampere", "Utrecht", "Valparaiso", "Winnipeg", "Xiamen", "Yerevan", "Zagreb", "Antwerp", "Bergen",
          "Cusco", "Durban", "Eindhoven", "Faro", "Ghent", "Halifax", "Innsbruck", "Jena", "Kobe", "Lyon",
          "Malmo", "Nagoya"]
SURNAMES = ["Okafor", "Lindqvist", "Moreau", "Takahashi", "Brennan", "Vasquez", "Kowalczyk", "Haddad", "Novak",
            "Oyelaran", "Petrov", "Quintero", "Rasmussen", "Szabo", "Tremblay", "Ugarte", "Varga", "Whitlock",
            "Yilmaz", "Zielinski", "Abernathy", "Bjornsson", "Castellano", "Delacroix", "Eriksen", "Fitzgerald",
            "Gunawardena", "Hollister", "Iglesias", "Jovanovic", "Kaminski", "Lombardi", "Mbeki", "Nakamura",
            "Ostrowski", "Pellegrini", "Rahimi", "Sorensen", "Tanaka", "Valdivia"]
FIRST = ["Amara", "Bruno", "Clara", "Dmitri", "Elena", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Keiko", "Luca"]
EVENTS = [  # (what happened, the thing it happened to, what was done to people): one per story
    ("fire", "warehouse", "evacuated"), ("flood", "riverside district", "rescued"),
    ("collapse", "footbridge", "cordoned off"), ("strike", "container port", "picketed"),
    ("chemical leak", "fertiliser plant", "sheltered"), ("derailment", "freight line", "diverted"),
    ("power cut", "tram network", "stranded"), ("theft", "maritime museum", "questioned"),
    ("landslide", "mountain road", "airlifted"), ("outbreak", "care home", "isolated"),
    ("explosion", "gas depot", "treated"), ("blackout", "airport terminal", "rebooked"),
    ("sinkhole", "shopping street", "relocated"), ("cyberattack", "city hospital", "turned away"),
    ("blizzard", "motorway", "sheltered overnight"), ("wildfire", "pine forest", "moved to safety"),
    ("roof failure", "sports arena", "led out"), ("water contamination", "reservoir", "supplied"),
    ("crane accident", "shipyard", "pulled clear"), ("stampede", "football stadium", "carried out"),
    ("tunnel flood", "metro line", "walked out"), ("boiler blast", "textile mill", "hospitalised"),
    ("ferry grounding", "harbour channel", "ferried ashore"), ("oil spill", "estuary", "warned"),
    ("building fire", "student hostel", "rehoused"), ("dam breach", "irrigation canal", "evacuated uphill"),
    ("storm", "seafront promenade", "kept indoors"), ("bus crash", "ring road", "freed"),
    ("heatwave", "old town", "cooled"), ("ammonia leak", "ice rink", "decontaminated"),
    ("hailstorm", "vineyards", "compensated"), ("grain silo fire", "rail yard", "kept back"),
    ("scaffold collapse", "cathedral", "dug out"), ("avalanche", "ski resort", "located"),
    ("gas leak", "primary school", "sent home"), ("lightning strike", "oil terminal", "withdrawn"),
    ("pipeline burst", "industrial estate", "diverted"), ("pier collapse", "marina", "pulled from the water"),
    ("forest fire", "national park", "escorted"), ("tram collision", "main square", "attended to"),
]
HEADLINES = [
    "{Event} at {city} {thing} leaves {n} injured",
    "{city} {thing} {event}: {official} orders inquiry",
    "Hundreds {did} after {event} hits {city}",
    "{agency} says {city} {event} was preventable",
    "What we know about the {city} {thing} {event}",
    "{city} residents count cost of {thing} {event}",
]
SENTENCES = [
    ["The {event} broke out at the {thing} in {city} early on {day}, and {n} people were injured.",
     "Mayor {official} said the {thing} in {city} would stay closed while engineers assess it.",
     "Emergency crews {did} about {m} people from streets around the {thing} overnight.",
     "Investigators from the {agency} arrived in {city} on {day} to examine the {thing}.",
     "Local businesses near the {thing} said the {event} had cut their trade in half.",
     "Witnesses in {city} described hearing a loud bang shortly before the {event} began."],
    ["{official}, who has led {city} since the last election, promised compensation for families.",
     "The {agency} confirmed that {n} of the injured remained in hospital in {city}.",
     "Union representative {worker} said staff at the {thing} had warned of the risk for months.",
     "Insurers estimate the damage caused by the {event} in {city} at several million.",
     "Schools within two kilometres of the {thing} were told to keep pupils indoors.",
     "The {agency} has opened a formal investigation into the {thing} {event}."],
    ["{worker} told reporters the {thing} had failed two safety inspections last year.",
     "A spokesperson for the {agency} declined to speculate on the cause of the {event}.",
     "Roads into central {city} reopened by the evening, police said.",
     "{official} thanked volunteers who {did} neighbours through the night.",
     "The owners of the {thing} said they were cooperating fully with the {agency}.",
     "It is the worst {event} in {city} in more than a decade, according to {agency} records."],
]
OUTLETS = ["northern-courier", "daily-ledger", "metro-wire", "coastal-times", "evening-post", "city-herald",
           "morning-star", "valley-news"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def decade_stream(stories: int = 40, seed: int = 14) -> list[dict]:
    """The labelled stream, in time order."""
    rng = random.Random(seed)
    start, end = datetime(2015, 1, 5, tzinfo=timezone.utc), datetime(2025, 11, 20, tzinfo=timezone.utc)
    step = (end - start) / (stories - 1)
    rows = []
    for s in range(stories):
        city = CITIES[s]
        event, thing, did = EVENTS[s % len(EVENTS)]
        slots = {"city": city, "event": event, "Event": event.capitalize(), "thing": thing, "did": did,
                 "official": f"{rng.choice(FIRST)} {SURNAMES[s]}", "worker": f"{rng.choice(FIRST)} {SURNAMES[-1 - s]}",
                 "agency": f"{city} Safety Board", "n": rng.randint(3, 40), "m": rng.randint(100, 900)}
        began = start + s * step + timedelta(hours=rng.randint(0, 12))
        story = f"story-{s:02d}"
        for a in range(rng.randint(3, 6)):
            published = began + timedelta(hours=a * 4, minutes=rng.randint(0, 59))
            slots["day"] = DAYS[published.weekday()]
            body = " ".join(group[a].format(**slots) for group in SENTENCES)
            rows.append(stream_row(f"{story}-{a}", OUTLETS[(s + a) % len(OUTLETS)], HEADLINES[a].format(**slots),
                                   body, published, story))
        if s % 5 == 2:  # a syndicated reprint of the story's first article, a few hours later
            first = next(r for r in rows if r["id"] == f"{story}-0")
            rows.append(stream_row(f"{story}-reprint", "wire-syndicate", "UPDATE: " + first["title"],
                                   first["body"] + " Reporting by the syndicate desk; editing by the night team.",
                                   parse_time(first["published_at"]) + timedelta(hours=5), story,
                                   duplicate_of=first["id"]))
    rows.sort(key=lambda r: r["published_at"])
    return rows


def stream_row(article_id, source, title, body, published, story, duplicate_of=None) -> dict:
    return {"id": article_id, "source": source, "url": f"https://{source}.example/{article_id}", "title": title,
            "body": body, "published_at": published.strftime("%Y-%m-%dT%H:%M:%SZ"), "language": "en",
            "gold": {"story": story, "duplicate_of": duplicate_of}}


def parse_time(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
