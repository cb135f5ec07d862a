"""Name, place and domain pools per country, and the variants real records show."""

from __future__ import annotations

import unicodedata

COUNTRIES: tuple[str, ...] = ("US", "GB", "DE", "FR")
COUNTRY_WEIGHTS: tuple[float, ...] = (0.45, 0.20, 0.20, 0.15)
CURRENCY = {"US": "USD", "GB": "GBP", "DE": "EUR", "FR": "EUR"}
# local currency per USD, to plant order values in one scale
FX_PER_USD = {"USD": 1.0, "GBP": 0.79, "EUR": 0.92}

FIRST_F = {
    "US": ["Elizabeth", "Jennifer", "Patricia", "Margaret", "Katherine", "Susan", "Rebecca",
           "Deborah", "Jessica", "Ashley", "Emily", "Sarah", "Amanda", "Melissa", "Stephanie",
           "Nicole", "Samantha", "Christine", "Victoria", "Abigail", "Madison", "Olivia",
           "Chloe", "Renée", "Zoë", "María", "Lucía", "Megan", "Lauren", "Hannah"],
    "GB": ["Elizabeth", "Margaret", "Katherine", "Victoria", "Charlotte", "Amelia", "Isabella",
           "Sophie", "Emily", "Jessica", "Hannah", "Rebecca", "Eleanor", "Abigail", "Harriet",
           "Lucy", "Grace", "Alice", "Phoebe", "Zoë", "Chloe", "Megan", "Siobhan", "Niamh"],
    "DE": ["Anna", "Katharina", "Elisabeth", "Franziska", "Johanna", "Susanne", "Sabine",
           "Jürgen", "Lena", "Lea", "Hanna", "Sophie", "Marie", "Charlotte", "Jülide", "Lisa",
           "Laura", "Julia", "Sarah", "Claudia", "Birgit", "Ursula", "Käthe", "Margarete"],
    "FR": ["Hélène", "Chloé", "Élodie", "Camille", "Léa", "Manon", "Inès", "Océane", "Amélie",
           "Juliette", "Margaux", "Céline", "Sophie", "Marie", "Isabelle", "Nathalie",
           "Brigitte", "Geneviève", "Françoise", "Mathilde", "Zoé", "Noémie", "Anaïs", "Émilie"],
}
FIRST_M = {
    "US": ["Robert", "William", "James", "Richard", "Michael", "Thomas", "Christopher",
           "Daniel", "Joseph", "Anthony", "Alexander", "Edward", "Matthew", "Andrew", "Joshua",
           "David", "John", "Charles", "Steven", "Kevin", "Brian", "Jonathan", "José",
           "Nicholas", "Benjamin", "Samuel", "Jacob", "Tyler", "Brandon", "Zachary"],
    "GB": ["William", "James", "Robert", "Thomas", "Edward", "Alexander", "Christopher",
           "Oliver", "Harry", "George", "Jack", "Charlie", "Henry", "Samuel", "Daniel",
           "Joseph", "Michael", "Richard", "Frederick", "Nicholas", "Seán", "Callum", "Liam"],
    "DE": ["Johannes", "Friedrich", "Wolfgang", "Jürgen", "Günter", "Matthias", "Stefan",
           "Andreas", "Michael", "Thomas", "Alexander", "Maximilian", "Lukas", "Felix", "Jonas",
           "Paul", "Leon", "Sebastian", "Tobias", "Björn", "Jörg", "Uwe", "Klaus", "Dieter"],
    "FR": ["François", "Jérôme", "Stéphane", "Sébastien", "Frédéric", "Jean", "Pierre",
           "Nicolas", "Julien", "Thomas", "Alexandre", "Antoine", "Mathieu", "Guillaume",
           "Hugo", "Louis", "Gabriel", "Raphaël", "Léo", "Noël", "Benoît", "Rémi", "Loïc",
           "Théo"],
}
SURNAMES = {
    "US": ["Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
           "Rodriguez", "Martinez", "Hernández", "Lopez", "Gonzalez", "Wilson", "Anderson",
           "Thomas", "Taylor", "Moore", "Jackson", "Martin", "Lee", "Pérez", "Thompson", "White",
           "Harris", "Sanchez", "Clark", "Ramírez", "Lewis", "Robinson", "O'Brien", "Nguyen",
           "Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres", "Hill"],
    "GB": ["Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies",
           "Robinson", "Wright", "Thompson", "Evans", "Walker", "White", "Roberts", "Green",
           "Hall", "Wood", "Jackson", "Clarke", "O'Neill", "Patel", "Khan", "Hughes", "Edwards",
           "Turner", "Lewis", "Harris", "Ffion-Jones", "MacDonald"],
    "DE": ["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker",
           "Schulz", "Hoffmann", "Schäfer", "Koch", "Bauer", "Richter", "Klein", "Wolf",
           "Schröder", "Neumann", "Schwarz", "Zimmermann", "Braun", "Krüger", "Hofmann",
           "Hartmann", "Lange", "Köhler", "Weiß", "Jäger", "Groß", "Böhm"],
    "FR": ["Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand",
           "Leroy", "Moreau", "Simon", "Laurent", "Lefèvre", "Michel", "García", "David",
           "Bertrand", "Roux", "Vincent", "Fournier", "Morel", "Girard", "André", "Lefebvre",
           "Mercier", "Dupont", "Lambert", "Bonnet", "François", "Müller"],
}
# (city, postal code prefix / list, phone area code) per country
CITIES = {
    "US": [("New York", "100", "212"), ("Los Angeles", "900", "213"), ("Chicago", "606", "312"),
           ("Houston", "770", "713"), ("Phoenix", "850", "602"), ("San Francisco", "941", "415"),
           ("Seattle", "981", "206"), ("Boston", "021", "617"), ("Washington, D.C.", "200", "202"),
           ("Austin", "787", "512"), ("Denver", "802", "303"), ("Miami", "331", "305")],
    "GB": [("London", "SW1", "20"), ("Manchester", "M1", "161"), ("Birmingham", "B1", "121"),
           ("Leeds", "LS1", "113"), ("Glasgow", "G1", "141"), ("Bristol", "BS1", "117"),
           ("Edinburgh", "EH1", "131"), ("Liverpool", "L1", "151"), ("Cardiff", "CF10", "29")],
    "DE": [("Berlin", "10", "30"), ("Hamburg", "20", "40"), ("München", "80", "89"),
           ("Köln", "50", "221"), ("Frankfurt am Main", "60", "69"), ("Stuttgart", "70", "711"),
           ("Düsseldorf", "40", "211"), ("Leipzig", "04", "341"), ("Nürnberg", "90", "911")],
    "FR": [("Paris", "75", "1"), ("Lyon", "69", "4"), ("Marseille", "13", "4"),
           ("Toulouse", "31", "5"), ("Nice", "06", "4"), ("Nantes", "44", "2"),
           ("Strasbourg", "67", "3"), ("Bordeaux", "33", "5"), ("Saint-Étienne", "42", "4"),
           ("Lille", "59", "3")],
}
STREETS = {
    "US": ["Main St", "Oak Ave", "Maple Dr", "Cedar Ln", "Elm St", "Park Ave", "Pine St"],
    "GB": ["High Street", "Station Road", "Church Lane", "Victoria Road", "Mill Lane"],
    "DE": ["Hauptstraße", "Schulstraße", "Gartenstraße", "Bahnhofstraße", "Lindenweg"],
    "FR": ["rue de la Paix", "avenue Victor Hugo", "rue Pasteur", "boulevard Voltaire"],
}
DOMAINS = {
    "US": ["gmail.com", "gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com",
           "aol.com", "comcast.net"],
    "GB": ["gmail.com", "hotmail.co.uk", "btinternet.com", "yahoo.co.uk", "outlook.com",
           "sky.com"],
    "DE": ["gmail.com", "web.de", "gmx.de", "t-online.de", "outlook.de", "gmx.net"],
    "FR": ["gmail.com", "orange.fr", "free.fr", "laposte.net", "hotmail.fr", "sfr.fr"],
}
NICKNAMES = {
    "Robert": ["Bob", "Rob", "Bobby"], "William": ["Bill", "Will", "Billy"],
    "Elizabeth": ["Liz", "Beth", "Lizzie"], "Katherine": ["Kate", "Katie", "Kathy"],
    "Margaret": ["Maggie", "Peggy", "Meg"], "James": ["Jim", "Jimmy", "Jamie"],
    "Richard": ["Rick", "Dick", "Rich"], "Michael": ["Mike", "Mikey"],
    "Jennifer": ["Jen", "Jenny"], "Thomas": ["Tom", "Tommy"], "Christopher": ["Chris"],
    "Daniel": ["Dan", "Danny"], "Joseph": ["Joe", "Joey"], "Anthony": ["Tony"],
    "Alexander": ["Alex", "Sasha"], "Susan": ["Sue", "Susie"], "Patricia": ["Pat", "Trish"],
    "Rebecca": ["Becky", "Becca"], "Deborah": ["Debbie", "Deb"], "Edward": ["Ed", "Ted"],
    "Matthew": ["Matt"], "Andrew": ["Andy", "Drew"], "Nicholas": ["Nick"],
    "Benjamin": ["Ben"], "Samuel": ["Sam"], "Victoria": ["Vicky", "Tori"],
    "Abigail": ["Abby"], "Samantha": ["Sam", "Sammy"], "Jessica": ["Jess"],
    "Johannes": ["Hans", "Johann"], "Friedrich": ["Fritz"], "Franziska": ["Franzi"],
    "Katharina": ["Kathi", "Kati"], "Elisabeth": ["Lisa", "Sissi"], "Maximilian": ["Max"],
    "Wolfgang": ["Wolf"], "Matthias": ["Matze"], "Margarete": ["Grete"],
    "Frederick": ["Fred", "Freddie"], "Charlotte": ["Lottie"], "Eleanor": ["Ellie", "Nell"],
    "Harriet": ["Hattie"], "Henry": ["Harry", "Hal"], "Isabella": ["Bella", "Izzy"],
    "Alexandre": ["Alex"], "Guillaume": ["Guigui"], "Mathilde": ["Mathou"],
    "Zachary": ["Zach"], "Jonathan": ["Jon"], "Stephanie": ["Steph"], "Nicole": ["Nikki"],
}
# German transliteration used by people whose keyboard has no umlaut
_DE_TRANSLIT = {"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue", "ß": "ss"}

PLACEHOLDER_EMAILS = ("nomail@nomail.com", "noemail@store.com", "NOEMAIL@STORE.COM",
                      "none@none.com", "no@email.com", "customer@nomail.com")
PLACEHOLDER_PHONES = ("0000000000", "+1 000 000 0000", "1111111111", "999-999-9999",
                      "00000000000")


def fold_accents(text: str) -> str:
    """José -> Jose, Müller -> Muller: what an ASCII-only form or keyboard produces."""
    return "".join(
        c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)
    ).replace("ß", "ss")


def transliterate_de(text: str) -> str:
    """Müller -> Mueller, Weiß -> Weiss."""
    return "".join(_DE_TRANSLIT.get(c, c) for c in text)


def has_accent(text: str) -> bool:
    return fold_accents(text) != text


def email_local(first: str, last: str) -> str:
    f = fold_accents(first).lower().replace("'", "").replace(" ", "")
    s = fold_accents(last).lower().replace("'", "").replace(" ", "")
    return f"{f}.{s}" if f else s
