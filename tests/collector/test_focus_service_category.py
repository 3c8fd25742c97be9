"""The ServiceCategory tables only say what the FOCUS specification allows."""

from __future__ import annotations

import polars as pl

from gpucost.collector.service_category import (
    AWS_PRODUCT_CODES,
    AWS_SERVICE_NAMES,
    AWS_SUBCATEGORIES,
    FOCUS_SERVICE_CATEGORIES,
    GCP_SERVICES,
    GCP_SUBCATEGORIES,
    unmapped_services,
    with_service_category,
)

# FOCUS 1.2 specification/columns/servicesubcategory.md (identical in 1.1): each allowed
# subcategory with its one parent category, copied from the spec's table.
FOCUS_1_2_SUBCATEGORIES = {
    "AI and Machine Learning": {
        "AI Platforms",
        "Bots",
        "Generative AI",
        "Machine Learning",
        "Natural Language Processing",
        "Other (AI and Machine Learning)",
    },
    "Analytics": {
        "Analytics Platforms",
        "Business Intelligence",
        "Data Processing",
        "Search",
        "Streaming Analytics",
        "Other (Analytics)",
    },
    "Business Applications": {"Productivity and Collaboration", "Other (Business Applications)"},
    "Compute": {
        "Containers",
        "End User Computing",
        "Quantum Compute",
        "Serverless Compute",
        "Virtual Machines",
        "Other (Compute)",
    },
    "Databases": {
        "Caching",
        "Data Warehouses",
        "Ledger Databases",
        "NoSQL Databases",
        "Relational Databases",
        "Time Series Databases",
        "Other (Databases)",
    },
    "Developer Tools": {
        "Developer Platforms",
        "Continuous Integration and Deployment",
        "Development Environments",
        "Source Code Management",
        "Quality Assurance",
        "Other (Developer Tools)",
    },
    "Identity": {"Identity and Access Management", "Other (Identity)"},
    "Integration": {
        "API Management",
        "Messaging",
        "Workflow Orchestration",
        "Other (Integration)",
    },
    "Internet of Things": {"IoT Analytics", "IoT Platforms", "Other (Internet of Things)"},
    "Management and Governance": {
        "Architecture",
        "Compliance",
        "Cost Management",
        "Data Governance",
        "Disaster Recovery",
        "Endpoint Management",
        "Observability",
        "Support",
        "Other (Management and Governance)",
    },
    "Media": {"Content Creation", "Gaming", "Media Streaming", "Mixed Reality", "Other (Media)"},
    "Migration": {"Data Migration", "Resource Migration", "Other (Migration)"},
    "Mobile": {"Other (Mobile)"},
    "Multicloud": {"Multicloud Integration", "Other (Multicloud)"},
    "Networking": {
        "Application Networking",
        "Content Delivery",
        "Network Connectivity",
        "Network Infrastructure",
        "Network Routing",
        "Network Security",
        "Other (Networking)",
    },
    "Security": {
        "Secret Management",
        "Security Posture Management",
        "Threat Detection and Response",
        "Other (Security)",
    },
    "Storage": {
        "Backup Storage",
        "Block Storage",
        "File Storage",
        "Object Storage",
        "Storage Platforms",
        "Other (Storage)",
    },
    "Web": {"Application Platforms", "Other (Web)"},
    "Other": {"Other (Other)"},
}


def test_every_category_is_a_focus_service_category() -> None:
    assert set(FOCUS_SERVICE_CATEGORIES) == set(FOCUS_1_2_SUBCATEGORIES)
    assert set(AWS_PRODUCT_CODES.values()) <= set(FOCUS_SERVICE_CATEGORIES)
    assert set(GCP_SERVICES.values()) <= set(FOCUS_SERVICE_CATEGORIES)


def test_every_subcategory_belongs_to_its_services_category() -> None:
    for categories, subcategories in (
        (AWS_PRODUCT_CODES, AWS_SUBCATEGORIES),
        (GCP_SERVICES, GCP_SUBCATEGORIES),
    ):
        wrong = {
            service: (categories.get(service), subcategory)
            for service, subcategory in subcategories.items()
            if subcategory not in FOCUS_1_2_SUBCATEGORIES.get(categories.get(service, ""), set())
        }
        assert wrong == {}


def test_every_service_name_stands_for_a_known_product_code() -> None:
    assert set(AWS_SERVICE_NAMES.values()) <= set(AWS_PRODUCT_CODES)


def test_unknown_services_stay_empty_and_are_counted() -> None:
    frame = pl.DataFrame(
        {"ServiceName": ["Compute Engine", "Brand New Service", "Brand New Service", None]}
    )
    categorized, unmapped = with_service_category(frame, pl.col("ServiceName"), "gcp")
    assert categorized["ServiceCategory"].to_list() == ["Compute", None, None, None]
    assert unmapped == {"(none)": 1, "Brand New Service": 2}
    assert unmapped_services(categorized) == unmapped
