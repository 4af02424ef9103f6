"""A newsroom that feeds (headline, body) texts through the engine the way a
worker does, and the texts the repair, API and worker tests feed it: four
outlets' write-ups of one dam burst, a flood elsewhere (shares words, not
the event) and an unrelated rate rise. Written for the tests.

Stories that should merge are made by posting with ``story_threshold=0.9``
(nothing joins: every original opens its own story); the dam texts link at
0.3-0.5, above the default ``merge_threshold`` (0.2), the flood below 0.1.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from storyengine.articles import new_article_record
from storyengine.decider import Decider
from storyengine.decisions import Outcome
from storyengine.store import RedisStore
from tests.helpers import pairs

# A Saturday in 2024: far from the wall clock, so every window below is the stream's own.
T0 = datetime(2024, 3, 9, 4, 0, tzinfo=timezone.utc)

# One event (a dam bursts above Varnholt), four outlets, four write-ups in their own words.
DAM = [
    ("Dam bursts above Varnholt, flooding the old town",
     "The Kelder dam above Varnholt gave way before dawn on Saturday, sending a wall of water down the Ossel "
     "valley and flooding the old town. Mayor Ingrid Sallow said rescuers had pulled forty people from "
     "rooftops and that three residents were missing. The reservoir had been swollen by a week of heavy rain, "
     "and engineers from the Ossel water board had warned in spring that the spillway was cracked. Army boats "
     "were ferrying families to the sports hall on the hill, where the Red Cross set up beds and a field "
     "kitchen."),
    ("Varnholt residents rescued from rooftops after Kelder reservoir fails",
     "Soldiers in inflatable boats spent Saturday lifting stranded families off roofs in Varnholt after the "
     "Kelder reservoir wall collapsed overnight. Ingrid Sallow, the town's mayor, told local radio that three "
     "people were still unaccounted for. The Ossel water board confirmed that its engineers had reported a "
     "cracked spillway months ago and said repairs had been scheduled for the summer. Evacuees spent the "
     "night in the hilltop sports hall, where Red Cross volunteers handed out blankets and hot meals."),
    ("Three missing as Kelder dam collapse swamps Varnholt",
     "Searchers in the Ossel valley were looking for three missing residents on Sunday, a day after the "
     "Kelder dam failed and floodwater swept through Varnholt. Mayor Ingrid Sallow thanked the army crews who "
     "rescued dozens of people from rooftops. Questions are growing over why the Ossel water board did not "
     "fix the cracked spillway its own engineers had flagged. The Red Cross said more than six hundred "
     "evacuees were sleeping in the Varnholt sports hall and in schools on the hill."),
    ("Varnholt begins clean-up as Kelder floodwater recedes",
     "Floodwater from the burst Kelder dam began to drain from the streets of Varnholt on Monday, leaving mud "
     "and wrecked cars in the old town. Mayor Ingrid Sallow said the three residents who had been missing "
     "were found alive in a farmhouse cut off by the Ossel. The water board promised an independent inquiry "
     "into the cracked spillway. Families who had sheltered in the sports hall started returning to inspect "
     "their homes, helped by army crews and Red Cross volunteers."),
]
# Another event of the same kind (floods, rescues, shelters), elsewhere: shares words, not the event.
FLOOD = ("Monsoon floods cut off villages in Tarapur district",
         "Heavy monsoon rain flooded dozens of villages in Tarapur district on Saturday, cutting road links and "
         "forcing farmers to move livestock to higher ground. District collector Ramesh Iyer said relief teams "
         "had reached most villages by tractor and that no deaths had been reported. The Benna river rose two "
         "metres overnight, and the weather office expects more rain this week. Schools in the district were "
         "closed and turned into shelters for families whose houses were damaged.")
# An unrelated event.
BANK = ("Lindenmark central bank raises interest rates to curb inflation",
        "The Bank of Lindenmark raised its benchmark interest rate by a quarter of a percentage point on "
        "Thursday, the third increase this year, as policymakers tried to cool inflation that has stayed above "
        "target for eighteen months. Governor Tomas Eriksen said consumer prices were still rising too quickly, "
        "driven by rents, energy bills and food. Economists had been divided ahead of the meeting, with several "
        "warning that higher borrowing costs could push the economy into recession.")


class Newsroom:
    """Feeds articles through the engine the way a worker does (accept, then
    process), either splitting (``story_threshold=0.9``: every original opens
    its own story) or with the store's own settings (articles join)."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.splitting = Decider(store, store.settings.replace(story_threshold=0.9))
        self.joining = Decider(store)
        self._n = 0

    def post(self, text: tuple[str, str], hours: float, outlet: str, join: bool = False) -> Outcome:
        self._n += 1
        title, body = text
        record = new_article_record(source=outlet, url=f"https://{outlet}/news/{self._n}", title=title, body=body,
                                    published_at=T0 + timedelta(hours=hours))
        [(article_id, created)] = pairs(self.store.accept_articles([record]))
        assert created
        return (self.joining if join else self.splitting).process(article_id)


def reprint(text: tuple[str, str], n: int = 1) -> tuple[str, str]:
    """The same body under another headline: a copy of the article."""
    return f"Reprint {n}: {text[0].lower()}", text[1]
