"""Invented news articles that several test files post to the engine: five
events (a chemical fire with a reprint and another outlet's report, a rate
rise, a football sacking, a bridge collapse with a wire report and a brief, a
trawler lost over four days) as keyword arguments of article() (a record for
the store) or as_post() (a body to POST), the Halvik storm surge as a headline
and its sentences (for cuts of one story), and a hostile headline, outlet and
body (markup that must never render as markup).

Written for the tests (no real outlet's text); data used by one test file
only stays in that file.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from storyengine.articles import new_article_record

T0 = datetime(2024, 3, 5, 8, 0, tzinfo=timezone.utc)  # article(hours=h) is published h hours after it

# Event 1, outlet 1 (with a typo, "controll", that a reprint fixes).
FIRE_COURIER_TITLE = "Fire at Marrow Chemicals plant in Port Halden forces evacuation"
FIRE_COURIER_BODY = (
    "A large fire broke out early on Tuesday at the Marrow Chemicals plant in Port Halden, sending a column "
    "of black smoke over the Kessel River and forcing the evacuation of about 2,000 residents from nearby "
    "streets. Fire chief Elena Vasquez said twelve workers were taken to Halden General Hospital with "
    "breathing problems, two of them in serious condition. The blaze started in a storage hall where "
    "solvents were kept and spread to a loading dock before crews brought it under controll shortly after "
    "noon. Marrow Chemicals said in a statement that production had been halted and that it was "
    "cooperating with investigators. Environmental officials were testing water from the Kessel River for "
    "signs of contamination and asked people living downstream not to fish until the results were known. "
    "Residents were told they could return home on Wednesday morning, once air quality readings had "
    "returned to normal levels across the district."
)
# Event 1, outlet 2: its own wording, the same people, places and facts.
FIRE_VALLEY_TITLE = "Port Halden chemical blaze sends twelve Marrow workers to hospital"
FIRE_VALLEY_BODY = (
    "Twelve employees of Marrow Chemicals were treated at Halden General Hospital after flames tore through "
    "a solvent warehouse at the company's Port Halden site on Tuesday, officials said. Elena Vasquez, who "
    "leads the Port Halden fire service, told reporters that firefighters battled the blaze for more than "
    "six hours and that two of the injured workers remained in serious condition. Police evacuated homes "
    "within a kilometre of the plant as thick smoke drifted across the Kessel River. Marrow Chemicals "
    "suspended production and promised a full investigation into the cause of the fire. State "
    "environmental inspectors collected samples from the Kessel River and warned anglers downstream to stay "
    "away while tests continue. Evacuated families were expected back in their homes by Wednesday, "
    "according to the city council."
)
# Event 2, unrelated.
BANK_TITLE = "Lindenmark central bank raises interest rates to curb inflation"
BANK_BODY = (
    "The Bank of Lindenmark raised its benchmark interest rate by a quarter of a percentage point on "
    "Thursday, the third increase this year, as policymakers tried to cool inflation that has stayed above "
    "target for eighteen months. Governor Tomas Eriksen said consumer prices were still rising too quickly, "
    "driven by rents, energy bills and food, and that the bank was prepared to act again if needed. The "
    "decision lifts the main lending rate to 4.25 percent, its highest level in more than a decade. "
    "Economists had been divided ahead of the meeting, with several warning that higher borrowing costs "
    "could push the economy into recession. Mortgage lenders are expected to pass the increase on to "
    "homeowners within weeks. The Lindenmark crown strengthened against the euro after the announcement, "
    "and shares in the country's largest banks rose in afternoon trading."
)
# Event 3, unrelated, about the same size.
FOOTBALL_TITLE = "Ostbury Rovers sack manager Declan Moyes after cup exit"
FOOTBALL_BODY = (
    "Ostbury Rovers dismissed manager Declan Moyes on Sunday, a day after the club was knocked out of the "
    "national cup by second-tier Fenwick Athletic. The board said results had fallen short of expectations "
    "and thanked Moyes for his work over three seasons, during which Rovers won promotion and reached a "
    "European final. Assistant coach Marta Lindqvist will take charge of training until a replacement is "
    "found. Supporters had protested outside Kingsmead Stadium after a run of seven games without a win, "
    "and several senior players were reported to have questioned the tactics in private. Bookmakers made "
    "former Rovers captain Ivan Petrak the early favourite for the job. The club sits fourteenth in the "
    "league, six points above the relegation places, with eleven matches left to play."
)


def reprint_of(body: str, keep: float = 0.6) -> str:
    """A syndicated copy: boilerplate prepended, the typo fixed, the tail cut."""
    words = body.split()
    kept = " ".join(words[: int(len(words) * keep)])
    return "Advertisement\n" + kept.replace("controll", "control")


def article(client_id: str, title: str, body: str, hours: float = 0.0, source: str | None = None) -> dict:
    return new_article_record(source=source or f"outlet-{client_id}", url=f"https://news.example/{client_id}",
                              title=title, body=body, published_at=T0 + timedelta(hours=hours), article_id=client_id)


def as_post(spec: dict) -> dict:
    return {"id": spec["client_id"], "source": spec["source"], "url": f"https://news.example/{spec['client_id']}",
            "title": spec["title"], "body": spec["body"],
            "published_at": (T0 + timedelta(hours=spec["hours"])).strftime("%Y-%m-%dT%H:%M:%SZ")}


BANK = dict(client_id="bank", title=BANK_TITLE, body=BANK_BODY, hours=-20, source="finance-daily")
FOOTBALL = dict(client_id="football", title=FOOTBALL_TITLE, body=FOOTBALL_BODY, hours=-10, source="sport-desk")
COURIER = dict(client_id="fire-courier", title=FIRE_COURIER_TITLE, body=FIRE_COURIER_BODY, hours=0,
               source="northern-courier")
REPRINT = dict(client_id="fire-reprint", title="Chemical plant blaze: residents evacuated",
               body=reprint_of(FIRE_COURIER_BODY), hours=2, source="coastal-herald")
VALLEY = dict(client_id="fire-valley", title=FIRE_VALLEY_TITLE, body=FIRE_VALLEY_BODY, hours=3,
              source="valley-times")


def shout(text: str) -> str:
    """The same words in capitals, with typographic apostrophes and dashes."""
    return text.upper().replace("'", "\u2019").replace(", ", " \u2014 ")


# Event 4: a long article (about 430 words) and what others made of it.
BRIDGE_TITLE = "Aldwick Bridge collapses into River Tamsin during morning rush hour"
BRIDGE_BODY = (
    "A section of the Aldwick Bridge in the city of Carrowmore collapsed into the River Tamsin shortly after "
    "eight o'clock on Monday morning, sending at least four cars and a delivery van into the water and "
    "leaving dozens of commuters stranded on either bank. Emergency services said nine people had been "
    "pulled from the river alive and taken to St Brendan's Hospital, where three were being treated for "
    "serious injuries. Two people were still missing on Monday afternoon, and divers from the Carrowmore "
    "harbour police were searching the wreckage in strong currents.\n"
    "Witnesses described hearing a loud crack before the central span dropped several metres and then "
    "slid into the river. Aoife Brennan, who runs a bakery on Quay Street, said the noise sounded like "
    "thunder. She saw a bus stop just short of the gap, and its passengers climbed out through the back "
    "door while other drivers reversed away from the edge. A cyclist who had been halfway across managed "
    "to jump onto the remaining section and was helped to safety by a passing taxi driver.\n"
    "The bridge, built in 1962, carries about forty thousand vehicles a day between the old town and the "
    "docklands. It had been due for a major refurbishment next spring after engineers found corrosion in "
    "its steel supports during an inspection two years ago. Mayor Declan Hurley said the city would open "
    "an independent inquiry into why the work had been delayed, and promised that every other bridge in "
    "Carrowmore would be checked before the end of the week.\n"
    "Transport minister Ruth Callaghan travelled to the scene by helicopter and met rescue workers on the "
    "northern bank. She said the government would pay for a temporary crossing and that army engineers "
    "could have a floating bridge in place within a fortnight. Until then, traffic between the two halves "
    "of the city will be diverted over the Pennock Road bridge, five kilometres upstream, and extra ferries "
    "will run from the docklands to the old town every fifteen minutes.\n"
    "Shipping on the River Tamsin has been suspended below the collapse, and the port authority warned "
    "that cargo vessels due in Carrowmore this week would be sent to other harbours along the coast. Local "
    "businesses on both sides of the river said they feared weeks of lost trade. Schools in the docklands "
    "will stay closed on Tuesday, and the city council has opened a helpline for families who are still "
    "waiting for news of relatives. Police asked people to stay away from the riverside so that rescue "
    "boats and divers could continue their work through the night."
)
# Event 4, another outlet's own report: the same names and places, none of the sentences.
BRIDGE_WIRE_TITLE = "Search for two missing after Carrowmore bridge falls into the Tamsin"
BRIDGE_WIRE_BODY = (
    "Rescue divers in Carrowmore spent Monday night searching the River Tamsin for two people who are "
    "believed to have been in a car when the central span of the Aldwick Bridge gave way. Nine others "
    "were rescued from the water and three of them are in a serious condition at St Brendan's Hospital, "
    "according to the harbour police. The 1962 bridge had been scheduled for repairs after an inspection "
    "found rusting supports, and Mayor Declan Hurley has ordered an inquiry into the delay. Transport "
    "minister Ruth Callaghan, who visited the riverbank, pledged government money for a temporary army "
    "pontoon. Commuters face long detours over the Pennock Road crossing, while ships bound for Carrowmore "
    "are being diverted to other ports."
)

# Event 5: a story that develops over days, one new report a day.
TRAWLER_DAY0_TITLE = "Trawler Northern Star missing off Skerry Point with six crew"
TRAWLER_DAY0_BODY = (
    "A search is under way for the fishing trawler Northern Star, which lost contact with the coastguard "
    "off Skerry Point late on Friday with six crew on board. The Brannock coastguard said the vessel sent "
    "a brief distress call as a storm moved in from the west, and that lifeboats from Kilbride and "
    "Brannock were sent to its last known position. The trawler, skippered by Owen Fairley, left Kilbride "
    "harbour on Thursday for the herring grounds. Families of the crew gathered at the harbour office "
    "overnight as waves of eight metres hampered the search."
)
TRAWLER_DAY1_TITLE = "Life raft from Northern Star found as Skerry Point search widens"
TRAWLER_DAY1_BODY = (
    "Rescuers found an empty life raft from the trawler Northern Star drifting twenty kilometres south of "
    "Skerry Point on Saturday, the Brannock coastguard said, as the search for its six crew widened. A "
    "navy patrol ship and two helicopters joined the Kilbride and Brannock lifeboats once the storm eased. "
    "Skipper Owen Fairley's brother said the families in Kilbride were clinging to hope. Coastguard "
    "officers said debris, including fish boxes marked with the trawler's name, had also been recovered."
)
TRAWLER_DAY2_TITLE = "Two Northern Star fishermen rescued alive near Skerry Point"
TRAWLER_DAY2_BODY = (
    "Two crew members of the trawler Northern Star were found alive on a rocky islet near Skerry Point on "
    "Sunday, two days after the vessel went missing, the Brannock coastguard said. The men, both from "
    "Kilbride, were winched aboard a helicopter and flown to hospital suffering from cold and exhaustion. "
    "They told rescuers that the trawler capsized in the storm and that skipper Owen Fairley had helped "
    "them into the water before it sank. The search for the four other crew continued into the night."
)
TRAWLER_DAY3_TITLE = "Search for Northern Star crew called off as Kilbride mourns"
TRAWLER_DAY3_BODY = (
    "The Brannock coastguard called off the search for four crew of the trawler Northern Star on Monday, "
    "three days after it sank off Skerry Point. Skipper Owen Fairley is among those missing and presumed "
    "dead. Hundreds of people gathered at Kilbride harbour for a vigil, and the two survivors sent a "
    "message thanking the lifeboat crews. The marine accident investigation board said it would examine "
    "why the Northern Star's emergency beacon did not activate when it went down."
)

BRIDGE = dict(client_id="bridge", title=BRIDGE_TITLE, body=BRIDGE_BODY, hours=1, source="carrowmore-post")
BRIDGE_WIRE = dict(client_id="bridge-wire", title=BRIDGE_WIRE_TITLE, body=BRIDGE_WIRE_BODY, hours=4,
                   source="national-wire")
# A news-in-brief item: the headline and the first sixty words of the long article.
BRIDGE_BRIEF = dict(client_id="bridge-brief", title=BRIDGE_TITLE, body=" ".join(BRIDGE_BODY.split()[:60]),
                    hours=2, source="metro-briefs")
TRAWLER = [dict(client_id=f"trawler-day{day}", title=title, body=body, hours=24 * day, source=f"outlet-{day}")
           for day, (title, body) in enumerate([(TRAWLER_DAY0_TITLE, TRAWLER_DAY0_BODY),
                                                (TRAWLER_DAY1_TITLE, TRAWLER_DAY1_BODY),
                                                (TRAWLER_DAY2_TITLE, TRAWLER_DAY2_BODY),
                                                (TRAWLER_DAY3_TITLE, TRAWLER_DAY3_BODY)])]

# Event 6: a long article as its sentences; tests make copies of it from runs of them (a wire story cut to fit).
HALVIK = ("Storm surge breaches Halvik sea wall, flooding the harbour district", [
    "A storm surge driven by gale-force winds broke through the Halvik sea wall late on Thursday, flooding the "
    "harbour district and forcing hundreds of residents from their homes.",
    "The coastguard said waves more than six metres high struck the old stone barrier shortly after the evening "
    "high tide.",
    "Water poured into the streets behind the fish market within minutes, and the lower floors of dozens of "
    "houses along Quay Street were submerged.",
    "Firefighters used rowing boats borrowed from the sailing club to reach elderly residents trapped in their "
    "upstairs rooms.",
    "Mayor Annelie Strand said nobody had been killed but that two fishermen were treated in hospital for "
    "hypothermia after their boat capsized in the harbour mouth.",
    "The regional emergency agency opened the Halvik secondary school as a shelter and said it was housing about "
    "three hundred people overnight.",
    "Power was cut to much of the town after a substation near the ferry terminal flooded, and the ferry service "
    "to the islands was suspended.",
    "Engineers from the coastal authority had warned in a report last autumn that a forty metre section of the "
    "wall was undermined and needed urgent repair.",
    "The authority said on Friday that the repair had been budgeted for next year and that it would now bring "
    "the work forward.",
    "Residents who gathered at the school complained that warnings to leave the harbour district came too late, "
    "long after the water had reached their doors.",
    "The national weather office said the storm, which it named Ingrid, was the strongest to hit the western "
    "coast in twelve years.",
    "Wind gusts of one hundred and forty kilometres an hour were recorded at the Halvik lighthouse before the "
    "instruments failed.",
    "Insurers said it was too early to estimate the cost of the damage, but local businesses expect losses "
    "running into millions.",
    "The fish market, which supplies restaurants across the region, will stay closed for at least two weeks "
    "while its cold stores are cleaned.",
    "Army engineers arrived on Friday morning with sandbags and pumps and began closing the breach with steel "
    "sheets and rock.",
    "The government promised emergency funds for families whose homes were damaged and said an inquiry would "
    "examine the state of the sea wall.",
])


# Text a client may send that must never become markup. clean_text reduces real tags
# in a title to text, so the title carries escaped markup and template syntax; an
# outlet name is kept as sent, so it carries real tags.
HOSTILE_TITLE = "&lt;script&gt;alert(1)&lt;/script&gt; Mayor's \"quiet\" plan {{ 7*7 }} {% raw %} & more"
HOSTILE_SOURCE = "<script>document.title='pwned'</script><img src=x onerror=alert(2)>"
HOSTILE_BODY = ("The city council approved the harbour tunnel after a night of debate, with the mayor promising "
                "that tolls would repay the loan within twenty years and that ferry routes would continue.")
