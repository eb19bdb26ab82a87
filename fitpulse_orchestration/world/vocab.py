"""Vocabulary of the synthetic FitPulse world: the values profiles and catalog items take."""

from __future__ import annotations

from typing import Final

REGIONS: Final = ("us-east", "us-west", "eu-west", "eu-central", "uk", "br", "in", "jp")
REGION_WEIGHTS: Final = (0.22, 0.14, 0.14, 0.12, 0.1, 0.1, 0.1, 0.08)

REGION_TIMEZONES: Final = {
    "us-east": ("America/New_York", -5),
    "us-west": ("America/Los_Angeles", -8),
    "eu-west": ("Europe/Paris", 1),
    "eu-central": ("Europe/Berlin", 1),
    "uk": ("Europe/London", 0),
    "br": ("America/Sao_Paulo", -3),
    "in": ("Asia/Kolkata", 5),
    "jp": ("Asia/Tokyo", 9),
}
"""Region -> (IANA timezone, approximate UTC offset in hours used by the simulation)."""

FITNESS_LEVELS: Final = ("beginner", "intermediate", "advanced")
FITNESS_WEIGHTS: Final = (0.4, 0.4, 0.2)
GOALS: Final = (
    "lose_weight",
    "build_strength",
    "flexibility",
    "endurance",
    "stress_relief",
    "general_health",
)

ITEM_TYPES: Final = ("workout", "plan", "article", "video")
ITEM_TYPE_WEIGHTS: Final = (0.5, 0.1, 0.2, 0.2)
ITEM_ID_PREFIX: Final = {"workout": "wk", "plan": "pl", "article": "ar", "video": "vd"}
CATEGORIES: Final = (
    "strength",
    "cardio",
    "yoga",
    "hiit",
    "running",
    "mobility",
    "meditation",
    "nutrition",
    "cycling",
    "pilates",
)
TRENDING_CATEGORY: Final = "dance"
"""Category that does not exist in the base world; a shift (``ShiftParams``) introduces it."""
ALL_CATEGORIES: Final = (*CATEGORIES, TRENDING_CATEGORY)
"""Every category an item can have; an item's category index points into this tuple."""
TRENDING_ITEM_TYPE_WEIGHTS: Final = (0.55, 0.05, 0.05, 0.35)
"""``ITEM_TYPES`` weights of trending items: mostly workouts and videos."""
TRENDING_DIFFICULTY_WEIGHTS: Final = (0.6, 0.3, 0.1)
"""``DIFFICULTIES`` weights of trending items: mostly beginner-friendly."""
DIFFICULTIES: Final = ("beginner", "intermediate", "advanced")
DIFFICULTY_WEIGHTS: Final = (0.35, 0.4, 0.25)
INTENSITIES: Final = ("low", "medium", "high")
EQUIPMENT: Final = ("none", "mat", "dumbbells", "kettlebell", "resistance_band", "bike")
CATEGORY_TAGS: Final = {
    "strength": ("full_body", "upper_body", "lower_body", "core", "glutes"),
    "cardio": ("fat_burn", "low_impact", "dance", "steps", "endurance"),
    "yoga": ("vinyasa", "hatha", "stretch", "balance", "morning"),
    "hiit": ("tabata", "emom", "amrap", "fat_burn", "quick"),
    "running": ("5k", "intervals", "tempo", "long_run", "form"),
    "mobility": ("hips", "shoulders", "back_care", "stretch", "recovery"),
    "meditation": ("sleep", "focus", "breathing", "stress", "morning"),
    "nutrition": ("protein", "meal_prep", "hydration", "recipes", "recovery"),
    "cycling": ("climb", "intervals", "endurance", "cadence", "recovery"),
    "pilates": ("core", "reformer", "mat_work", "posture", "balance"),
    "dance": ("hip_hop", "zumba", "choreo", "cardio_dance", "beginner_friendly"),
}
TITLE_WORDS: Final = ("Power", "Gentle", "Express", "Total", "Daily", "Ultimate", "Quick", "Deep")
PLATFORMS: Final = ("ios", "android", "web")
PLATFORM_WEIGHTS: Final = (0.55, 0.4, 0.05)
UNKNOWN_EVENT_TYPES: Final = ("swipe_left", "share_story", "legacy_rating")
