"""Fixed vocabularies and persona parameters for the sample-data generator.

Everything here is data, not logic. Changing a list changes the generated
bytes for every seed, so treat edits like a format change.
"""

from __future__ import annotations

# --- personas ---------------------------------------------------------------
# Customers get one of the first seven; anonymous-only visitors are the last.
PERSONAS: tuple[str, ...] = (
    "high_value_loyal",
    "discount_driven",
    "browser_no_purchase",
    "lapsed",
    "new",
    "weekend_buyer",
    "mobile_heavy",
    "anonymous_visitor",
)
LOYAL, DISCOUNT, BROWSER, LAPSED, NEW, WEEKEND, MOBILE, VISITOR = range(8)
CUSTOMER_PERSONA_WEIGHTS = (0.13, 0.15, 0.15, 0.15, 0.12, 0.15, 0.15)

# Per persona (index as PERSONAS): (orders Poisson mean, orders minimum,
# browse sessions Poisson mean, browse sessions minimum,
# mean order value in USD, lognormal sigma, discount share low, high,
# share of mobile/tablet devices).
PERSONA_PARAMS: tuple[tuple[float, int, float, int, float, float, float, float, float], ...] = (
    (3.0, 4, 0.5, 1, 230.0, 0.30, 0.00, 0.05, 0.25),  # loyal: frequent, big, recent
    (2.0, 2, 1.0, 0, 85.0, 0.30, 0.30, 0.50, 0.30),  # discount-driven
    (0.0, 0, 3.0, 4, 0.0, 0.00, 0.00, 0.00, 0.30),  # browsers: sessions, carts, no orders
    (1.0, 1, 0.5, 1, 70.0, 0.30, 0.00, 0.08, 0.30),  # lapsed: early orders only
    (0.0, 1, 1.5, 1, 65.0, 0.30, 0.00, 0.08, 0.30),  # new: 1 order in last 30 days
    (1.0, 2, 1.0, 1, 95.0, 0.30, 0.00, 0.08, 0.25),  # weekend buyers
    (1.0, 2, 1.5, 2, 45.0, 0.30, 0.00, 0.08, 0.97),  # mobile-heavy
    (0.0, 0, 0.8, 1, 0.0, 0.00, 0.00, 0.00, 0.45),  # anonymous visitors
)

# --- geography -------------------------------------------------------------
# country, calling code, national trunk prefix, currency, weight, NSN digits
COUNTRIES: tuple[tuple[str, str, str, str, float, int], ...] = (
    ("US", "1", "", "USD", 0.44, 10),
    ("GB", "44", "0", "GBP", 0.15, 10),
    ("DE", "49", "0", "EUR", 0.10, 10),
    ("FR", "33", "0", "EUR", 0.08, 9),
    ("CA", "1", "", "CAD", 0.07, 10),
    ("AU", "61", "0", "AUD", 0.05, 9),
    ("NL", "31", "0", "EUR", 0.04, 9),
    ("SE", "46", "0", "SEK", 0.04, 9),
    ("JP", "81", "0", "JPY", 0.03, 10),
)
# Approximate rate_to_usd, matching dbt_project/seeds/fx_rates.csv, so a
# persona's order values stay comparable after conversion to USD.
RATE_TO_USD = {"USD": 1.0, "GBP": 1.25, "EUR": 1.05, "CAD": 0.74, "AUD": 0.66,
               "SEK": 0.095, "JPY": 0.0067, "CHF": 1.12}
CITIES: dict[str, tuple[tuple[str, str], ...]] = {
    "US": (("New York", "10001"), ("San Francisco", "94105"), ("Chicago", "60601"),
           ("Austin", "73301"), ("Seattle", "98101"), ("Boston", "02108")),
    "GB": (("London", "SW1A 1AA"), ("Manchester", "M1 1AE"), ("Leeds", "LS1 4DY"),
           ("Bristol", "BS1 4DJ"), ("Edinburgh", "EH1 1YZ")),
    "DE": (("Berlin", "10115"), ("München", "80331"), ("Hamburg", "20095"), ("Köln", "50667")),
    "FR": (("Paris", "75001"), ("Lyon", "69001"), ("Marseille", "13001"), ("Nantes", "44000")),
    "CA": (("Toronto", "M5V 2T6"), ("Montréal", "H2Y 1C6"), ("Vancouver", "V6B 1A1")),
    "AU": (("Sydney", "2000"), ("Melbourne", "3000"), ("Brisbane", "4000")),
    "NL": (("Amsterdam", "1012 AB"), ("Rotterdam", "3011 AA"), ("Utrecht", "3511 AA")),
    "SE": (("Stockholm", "111 22"), ("Göteborg", "411 01"), ("Malmö", "211 20")),
    "JP": (("Tokyo", "100-0001"), ("Osaka", "530-0001"), ("Kyoto", "600-8001")),
}

FIRST_NAMES_F = ("Anna", "Emma", "Olivia", "Sophie", "Mia", "Chloé", "Hannah", "Laura",
                 "Julia", "Sarah", "Emily", "Grace", "Ava", "Zoë", "Lena", "Maria",
                 "Yuki", "Freja", "Isabel", "Nora")
FIRST_NAMES_M = ("James", "Liam", "Noah", "Lucas", "Jonas", "Oliver", "Max", "Ethan",
                 "Leon", "Hugo", "Daniel", "Thomas", "Paul", "Björn", "René", "David",
                 "Kenji", "Samuel", "Felix", "Adam")
LAST_NAMES = ("Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson",
              "Taylor", "Clark", "Lewis", "Walker", "Hall", "Young", "King", "Wright",
              "Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Martin", "Bernard",
              "Dubois", "Durand", "Lefèvre", "O'Brien", "Murphy", "Kelly", "García",
              "Martínez", "Jansen", "de Vries", "Bakker", "Andersson", "Johansson",
              "Nilsson", "Tanaka", "Suzuki", "Sato", "Nguyen", "Patel", "Kim", "Rossi",
              "Novak", "Evans", "Thomas", "Roberts", "Green", "Baker")
EMAIL_DOMAINS = ("example.com", "example.net", "example.org", "mail.example.com",
                 "inbox.example.net", "post.example.org")
PLACEHOLDER_EMAILS = ("noemail@example.com", "na@na.com", "test@test.com",
                      "NOEMAIL@EXAMPLE.COM", "none@none.com", "Test@Test.com")

GENDER_F = ("f", "F", "female", "Female", "w")
GENDER_M = ("m", "M", "male", "Male", "MALE")
CONSENT_TRUE = ("true", "True", "TRUE", "yes", "Yes", "YES", "1", "y", "Y")
CONSENT_FALSE = ("false", "False", "FALSE", "no", "No", "NO", "0", "n", "N")
# Offsets used for timestamps "with offset": the printed clock is local time.
TZ_OFFSETS_MIN = (0, 60, 120, -300, -480, 540, 330)

# --- devices ---------------------------------------------------------------
DEVICE_TYPES = ("mobile", "desktop", "tablet")
USER_AGENTS: tuple[tuple[str, ...], ...] = (
    (  # mobile
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36",
        "Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/123.0.6312.99 Mobile Safari/537.36",
        "ShopApp/5.12.0 (iPhone15,2; iOS 17.4; Scale/3.00)",
        "ShopApp/5.11.3 (Android 14; Pixel 7)",
    ),
    (  # desktop
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.4 Safari/605.1.15",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51",
    ),
    (  # tablet
        "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/124.0.6367.82 Safari/537.36",
    ),
)
BOT_USER_AGENTS = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
    "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
    "DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)",
)

# --- web -----------------------------------------------------------------
SITE = "https://shop.example.com"
REFERRERS = ("", "", "https://www.google.com/", "https://www.bing.com/",
             "https://www.facebook.com/", "https://www.instagram.com/",
             "https://mail.example.com/", "https://t.co/abc123")
# (source, medium, name); index 0 = no campaign
CAMPAIGNS: tuple[tuple[str, str, str], ...] = (
    ("", "", ""),
    ("google", "cpc", "brand_search"),
    ("facebook", "social", "summer_sale"),
    ("instagram", "social", "new_arrivals"),
    ("newsletter", "email", "weekly_digest"),
    ("newsletter", "email", "coupon_20_off"),
    ("affiliate", "referral", "voucher_site"),
)
DISCOUNT_CAMPAIGNS = (5, 6)
PAGE_NAMES = ("Home", "Category", "Product", "Search", "Cart")
N_PRODUCTS = 5000

EVENT_PAGE, EVENT_VIEWED, EVENT_ADDED, EVENT_CHECKOUT, EVENT_COMPLETED, EVENT_IDENTIFY = range(6)

ORDER_STATUSES = ("completed", "refunded", "cancelled", "pending")
CHANNELS = ("web", "app", "store")
