"""FOCUS ``ServiceCategory`` and ``ServiceSubcategory`` from a provider's own service names.

Native bills (AWS CUR and Cost Explorer, the GCP BigQuery export) name a service but not its
FOCUS category, and the allocator decides by that category (``Networking`` is shared by
default). The collectors look the provider's own identifier up here:

* AWS: the CUR's ``line_item_product_code`` (``AmazonEC2``), or a service *name* (Cost
  Explorer's ``SERVICE`` dimension, CUR ``product_product_name``) through
  :data:`AWS_SERVICE_NAMES`;
* GCP: the export's ``service.description`` (``Compute Engine``).

**Where the tables come from.** Categories: the FinOps Foundation's FOCUS converters'
mapping files ``conversion_configs/aws/mapping_files/aws_category_mapping.csv`` (product code
-> category) and ``conversion_configs/gcp/mapping_files/gcp_category_mapping.csv``
(service description -> category), github.com/finopsfoundation/focus_converters (MIT), with
the corrections listed in :data:`CORRECTIONS` (each says why). Subcategories: FOCUS 1.2's
allowed values (``specification/columns/servicesubcategory.md``, identical in 1.1 and 1.2),
filled only for the services the spec's own sample mapping table names
(``supporting_content/columns/servicesubcategory.md``: EC2 -> Virtual Machines, EKS/ECS ->
Containers, Lambda -> Serverless Compute, ...); every other row keeps a null subcategory
rather than a guess.

A value the tables do not know leaves ``ServiceCategory`` null (the allocator then calls the
charge ``other``) and is counted by :func:`unmapped_services` for the run manifest, so a new
service shows up as a number to look at, not as a silently wrong category.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import polars as pl

FOCUS_SERVICE_CATEGORIES: Final = (
    "AI and Machine Learning",
    "Analytics",
    "Business Applications",
    "Compute",
    "Databases",
    "Developer Tools",
    "Multicloud",
    "Identity",
    "Integration",
    "Internet of Things",
    "Management and Governance",
    "Media",
    "Migration",
    "Mobile",
    "Networking",
    "Security",
    "Storage",
    "Web",
    "Other",
)
"""FOCUS 1.0-1.3 ``ServiceCategory`` allowed values (spec: ``columns/servicecategory.md``)."""

# focus_converters aws_category_mapping.csv (MIT), product code -> category. Rows of that file
# whose key is a console name with a trailing "*" ("AWS Batch*") are not product codes and are
# left out; "Compute,Business Applications" is left out too (no AWS product code "Compute").
_AWS_CONVERTER: Final[Mapping[str, str]] = {
    "AWSCleanRooms": "Analytics",
    "AWSDataExchange": "Analytics",
    "AWSGlueElasticViews": "Analytics",
    "AWSGlue": "Analytics",
    "AWSLakeFormation": "Analytics",
    "AmazonAthena": "Analytics",
    "AmazonCloudSearch": "Analytics",
    "AmazonES": "Analytics",
    "AmazonFinSpace": "Analytics",
    "AmazonKinesisAnalytics": "Analytics",
    "AmazonKinesisFirehose": "Analytics",
    "AmazonKinesis": "Analytics",
    "AWSCloudMap": "Networking",
    "AmazonMSK": "Analytics",
    "AWSCloudWAN": "Networking",
    "AmazonQuickSight": "Analytics",
    "ElasticMapReduce": "Analytics",
    "datapipeline": "Analytics",
    "AWSQueueService": "Integration",
    "AmazonMQ": "Integration",
    "AmazonMWAA": "Integration",
    "AmazonSNS": "Integration",
    "AmazonStates": "Integration",
    "AWSDataTransfer": "Networking",
    "AppFlow": "Integration",
    "Amazon EventBridge": "Integration",
    "AmazonManagedBlockchain": "Other",
    "AmazonQLDB": "Other",
    "AWSDirectConnect": "Networking",
    "A4B": "Business Applications",
    "AWSELB": "Networking",
    "AWSSupplyChain": "Business Applications",
    "AWSWickr": "Business Applications",
    "AWSWisdom": "Business Applications",
    "AmazonChimeBusinessCalling": "Business Applications",
    "AmazonChimeCallMeAMCS": "Business Applications",
    "AmazonChimeCallMe": "Business Applications",
    "AmazonChimeDialInAMCS": "Business Applications",
    "AmazonChimeDialin": "Business Applications",
    "AmazonChimeFeatures": "Business Applications",
    "AmazonChimeServices": "Business Applications",
    "AWSGlobalAccelerator": "Networking",
    "AmazonChimeVoiceConnector": "Business Applications",
    "AmazonChime": "Business Applications",
    "AmazonHoneycode": "Business Applications",
    "AmazonPinpoint": "Business Applications",
    "AmazonSES": "Business Applications",
    "AmazonSWF": "Business Applications",
    "AmazonWAM": "Business Applications",
    "AmazonWorkDocs": "Business Applications",
    "AmazonWorkLink": "Business Applications",
    "AmazonWorkMail": "Business Applications",
    "AmazonWorkSpacesWeb": "Business Applications",
    "ContactLensAmazonConnect": "Business Applications",
    "CustomerProfiles": "Business Applications",
    "AWSBudgets": "Management and Governance",
    "AWSCostExplorer": "Management and Governance",
    "AWSNetworkFirewall": "Networking",
    "AWSPrivate5G": "Networking",
    "AWSAppRunner": "Compute",
    "AWSLambda": "Compute",
    "AWSOutposts": "Compute",
    "AmazonEC2": "Compute",
    "AmazonLightsail": "Compute",
    "SimSpaceWeaver": "Compute",
    "VMwareCloudOnAWS": "Compute",
    "AmazonECRPublic": "Compute",
    "AmazonECR": "Compute",
    "AmazonECS": "Compute",
    "AmazonEKS": "Compute",
    "AmazonApiGateway": "Networking",
    "AmazonDocDB": "Databases",
    "AmazonDynamoDB": "Databases",
    "AmazonElastiCache": "Databases",
    "AmazonMCS": "Databases",
    "AmazonMemoryDB": "Databases",
    "AmazonNeptune": "Databases",
    "AmazonRDS": "Databases",
    "AmazonRedshift": "Databases",
    "AmazonTimestream": "Databases",
    "AmazonCloudFront": "Networking",
    "AWSAmplify": "Developer Tools",
    "AWSAppSync": "Developer Tools",
    "AWSCodeArtifact": "Developer Tools",
    "AWSCodeCommit": "Developer Tools",
    "AWSCodeDeploy": "Developer Tools",
    "AWSCodePipeline": "Developer Tools",
    "AWSDeviceFarm": "Developer Tools",
    "CodeBuild": "Developer Tools",
    "CodeCatalyst": "Developer Tools",
    "CodeGuru": "Developer Tools",
    "AmazonAppStream": "Compute",
    "AWSAppFabric": "Integration",
    "AWSGreengrass": "Internet of Things",
    "AWSIoT1Click": "Internet of Things",
    "AWSIoTAnalytics": "Internet of Things",
    "AWSIoTEvents": "Internet of Things",
    "AWSIoTFleetWise": "Internet of Things",
    "AWSIoTSiteWise": "Internet of Things",
    "AWSIoTThingsGraph": "Internet of Things",
    "AWSIoT": "Internet of Things",
    "IoTDeviceDefender": "Internet of Things",
    "IoTDeviceManagement": "Internet of Things",
    "IoTTwinMaker": "Internet of Things",
    "AWSDeepRacer": "AI and Machine Learning",
    "AmazonA2I": "AI and Machine Learning",
    "AmazonCodeWhisperer": "AI and Machine Learning",
    "AmazonDevOpsGuru": "AI and Machine Learning",
    "AmazonEI": "AI and Machine Learning",
    "AmazonForecast": "AI and Machine Learning",
    "AmazonFraudDetector": "AI and Machine Learning",
    "AmazonHealthLake": "AI and Machine Learning",
    "AmazonKendra": "AI and Machine Learning",
    "AmazonLex": "AI and Machine Learning",
    "AmazonLookoutEquipment": "AI and Machine Learning",
    "AmazonLookoutMetrics": "AI and Machine Learning",
    "AmazonLookoutVision": "AI and Machine Learning",
    "AmazonMonitron": "AI and Machine Learning",
    "AmazonOmics": "AI and Machine Learning",
    "AmazonPersonalize": "AI and Machine Learning",
    "AmazonPolly": "AI and Machine Learning",
    "AmazonRekognition": "AI and Machine Learning",
    "AmazonSageMaker": "AI and Machine Learning",
    "AmazonTextract": "AI and Machine Learning",
    "comprehend": "AI and Machine Learning",
    "transcribe": "AI and Machine Learning",
    "translate": "AI and Machine Learning",
    "AWSCloudFormation": "Management and Governance",
    "AWSCloudTrail": "Management and Governance",
    "AWSConfig": "Management and Governance",
    "AWSResilienceHub": "Management and Governance",
    "AWSServiceCatalog": "Management and Governance",
    "AWSSystemsManager": "Management and Governance",
    "AmazonCloudWatch": "Management and Governance",
    "AmazonGrafana": "Management and Governance",
    "AmazonPrometheus": "Management and Governance",
    "OpsWorks": "Management and Governance",
    "AmazonRoute53": "Networking",
    "AmazonVPC": "Networking",
    "AWSBillingConductor": "Management and Governance",
    "AWSElementalMediaConvert": "Media",
    "AWSElementalMediaLive": "Media",
    "AWSElementalMediaPackage": "Media",
    "AWSElementalMediaStore": "Media",
    "AWSElementalMediaTailor": "Media",
    "AWSMediaConnect": "Media",
    "AmazonETS": "Media",
    "AmazonIVS": "Media",
    "AmazonKinesisVideo": "Media",
    "nimble": "Media",
    "AWSApplicationMigrationSvc": "Migration",
    "AWSDataSync": "Migration",
    "AWSDatabaseMigrationSvc": "Migration",
    "AWSM2": "Migration",
    "AWSTransfer": "Migration",
    "AmazonBraket": "Other",
    "AWSRoboMaker": "Other",
    "AWSGroundStation": "Other",
    "AWSCertificateManager": "Security",
    "AWSDirectoryService": "Security",
    "AWSFMS": "Security",
    "AWSSecretsManager": "Security",
    "AWSSecurityHub": "Security",
    "AWSShield": "Security",
    "AmazonCognitoSync": "Security",
    "AmazonCognito": "Security",
    "AmazonDetective": "Security",
    "AmazonGuardDuty": "Security",
    "AmazonInspectorV2": "Security",
    "AmazonInspector": "Security",
    "AmazonMacie": "Security",
    "AmazonSecurityLake": "Security",
    "AmazonVerifiedPermissions": "Security",
    "CloudHSM": "Security",
    "auditmanager": "Security",
    "awskms": "Security",
    "awswaf": "Security",
    "AWSBackup": "Storage",
    "AWSElasticDisasterRecovery": "Storage",
    "AWSStorageGatewayDeepArchive": "Storage",
    "AWSStorageGateway": "Storage",
    "AmazonEBS": "Storage",
    "AmazonEFS": "Storage",
    "AmazonFSx": "Storage",
    "AmazonGlacier": "Storage",
    "AmazonS3GlacierDeepArchive": "Storage",
    "AmazonS3": "Storage",
    "IngestionServiceSnowball": "Storage",
    "SnowballExtraDays": "Storage",
}

CORRECTIONS: Final[Mapping[str, tuple[str, str]]] = {
    # product code -> (category, why). Only where the converter's file says "Other" or lacks
    # the service and FOCUS 1.2's own sample mapping table (supporting_content/columns/
    # servicesubcategory.md) names it; where both name a real category, the converter's stays.
    "AmazonQLDB": ("Databases", "FOCUS 1.2 sample table: QLDB, Ledger Databases"),
    "AmazonManagedBlockchain": (
        "Databases",
        "FOCUS 1.2 sample table: Managed Blockchain, Ledger Databases",
    ),
    "AmazonBraket": ("Compute", "FOCUS 1.2 sample table: Braket, Quantum Compute"),
    "AWSGroundStation": (
        "Networking",
        "FOCUS 1.2 sample table: Ground Station, Network Connectivity",
    ),
    "AmazonBedrock": ("AI and Machine Learning", "FOCUS 1.2 sample table: Bedrock, Generative AI"),
    "AWSSupportBusiness": ("Management and Governance", "FOCUS 1.2 sample table: AWS Support"),
    "AWSSupportEnterprise": ("Management and Governance", "FOCUS 1.2 sample table: AWS Support"),
    "AWSDeveloperSupport": ("Management and Governance", "FOCUS 1.2 sample table: AWS Support"),
    "AWSEvents": (
        "Integration",
        "EventBridge (CloudWatch Events) is Integration in both the converter's file (under its "
        "console name) and FOCUS 1.2's sample table",
    ),
}

AWS_PRODUCT_CODES: Final[Mapping[str, str]] = {
    **_AWS_CONVERTER,
    **{code: category for code, (category, _) in CORRECTIONS.items()},
}
"""AWS ``line_item_product_code`` -> FOCUS ``ServiceCategory``."""

AWS_SUBCATEGORIES: Final[Mapping[str, str]] = {
    # FOCUS 1.2 supporting content, "Sample provider mappings" (AWS column), for the services
    # whose category there is the one above (a service filed differently there gets none).
    "AmazonEC2": "Virtual Machines",
    "AmazonEKS": "Containers",
    "AmazonECS": "Containers",
    "AWSLambda": "Serverless Compute",
    "AmazonAppStream": "End User Computing",
    "AmazonBraket": "Quantum Compute",
    "AmazonSageMaker": "Machine Learning",
    "AmazonPersonalize": "Machine Learning",
    "AmazonBedrock": "Generative AI",
    "AmazonLex": "Bots",
    "AmazonPolly": "Natural Language Processing",
    "transcribe": "Natural Language Processing",
    "translate": "Natural Language Processing",
    "AmazonRekognition": "Other (AI and Machine Learning)",
    "AmazonAthena": "Analytics Platforms",
    "AmazonQuickSight": "Business Intelligence",
    "ElasticMapReduce": "Data Processing",
    "AWSGlue": "Data Processing",
    "datapipeline": "Data Processing",
    "AmazonCloudSearch": "Search",
    "AmazonES": "Search",
    "AmazonKinesis": "Streaming Analytics",
    "AWSCleanRooms": "Other (Analytics)",
    "AmazonWorkDocs": "Productivity and Collaboration",
    "AmazonWorkLink": "Productivity and Collaboration",
    "AmazonWorkMail": "Productivity and Collaboration",
    "AmazonChime": "Productivity and Collaboration",
    "AWSSupplyChain": "Other (Business Applications)",
    "AmazonElastiCache": "Caching",
    "AmazonMemoryDB": "Caching",
    "AmazonRedshift": "Data Warehouses",
    "AmazonQLDB": "Ledger Databases",
    "AmazonManagedBlockchain": "Ledger Databases",
    "AmazonDynamoDB": "NoSQL Databases",
    "AmazonNeptune": "NoSQL Databases",
    "AmazonMCS": "NoSQL Databases",
    "AmazonRDS": "Relational Databases",
    "AmazonTimestream": "Time Series Databases",
    "CodeCatalyst": "Developer Platforms",
    "AWSCodeDeploy": "Continuous Integration and Deployment",
    "AWSCodePipeline": "Continuous Integration and Deployment",
    "CodeBuild": "Continuous Integration and Deployment",
    "AWSCodeArtifact": "Continuous Integration and Deployment",
    "AWSCodeCommit": "Source Code Management",
    "CodeGuru": "Quality Assurance",
    "AWSQueueService": "Messaging",
    "AmazonSNS": "Messaging",
    "AWSEvents": "Messaging",
    "AmazonMWAA": "Workflow Orchestration",
    "AWSIoT": "IoT Platforms",
    "AWSGreengrass": "IoT Platforms",
    "AWSConfig": "Architecture",
    "AWSCostExplorer": "Cost Management",
    "AWSBillingConductor": "Cost Management",
    "AmazonCloudWatch": "Observability",
    "AWSCloudTrail": "Observability",
    "AmazonGrafana": "Observability",
    "AWSSupportBusiness": "Support",
    "AWSSupportEnterprise": "Support",
    "AWSDeveloperSupport": "Support",
    "AWSDatabaseMigrationSvc": "Data Migration",
    "AWSApplicationMigrationSvc": "Resource Migration",
    "AWSELB": "Application Networking",
    "AmazonCloudFront": "Content Delivery",
    "AWSGroundStation": "Network Connectivity",
    "AmazonVPC": "Network Infrastructure",
    "AmazonRoute53": "Network Routing",
    "AWSSecretsManager": "Secret Management",
    "AWSCertificateManager": "Secret Management",
    "awskms": "Secret Management",
    "CloudHSM": "Secret Management",
    "AWSSecurityHub": "Security Posture Management",
    "AmazonMacie": "Security Posture Management",
    "AmazonGuardDuty": "Threat Detection and Response",
    "AmazonInspector": "Threat Detection and Response",
    "AmazonInspectorV2": "Threat Detection and Response",
    "AmazonDetective": "Threat Detection and Response",
    "AWSShield": "Threat Detection and Response",
    "AmazonSecurityLake": "Threat Detection and Response",
    "AWSBackup": "Backup Storage",
    "AmazonEBS": "Block Storage",
    "AmazonEFS": "File Storage",
    "AmazonS3": "Object Storage",
    "AmazonGlacier": "Object Storage",
}
"""AWS product code -> FOCUS 1.2 ``ServiceSubcategory`` (only where the spec's table says)."""

AWS_SERVICE_NAMES: Final[Mapping[str, str]] = {
    # Cost Explorer SERVICE dimension values and CUR product_product_name values, as AWS
    # writes them (the real Cost Explorer answers and CUR sample in tests/data/aws), -> code.
    "Amazon Elastic Compute Cloud - Compute": "AmazonEC2",
    "Amazon Elastic Compute Cloud": "AmazonEC2",
    "Amazon Elastic Container Service": "AmazonECS",
    "Amazon Elastic Container Service for Kubernetes": "AmazonEKS",
    "Amazon Elastic Kubernetes Service": "AmazonEKS",
    "Amazon EC2 Container Registry (ECR)": "AmazonECR",
    "AWS Lambda": "AWSLambda",
    "Amazon Simple Storage Service": "AmazonS3",
    "Amazon Elastic Block Store": "AmazonEBS",
    "Amazon Elastic File System": "AmazonEFS",
    "Amazon FSx": "AmazonFSx",
    "Amazon Glacier": "AmazonGlacier",
    "AWS Backup": "AWSBackup",
    "Amazon Virtual Private Cloud": "AmazonVPC",
    "Amazon CloudFront": "AmazonCloudFront",
    "Amazon Route 53": "AmazonRoute53",
    "Elastic Load Balancing": "AWSELB",
    "Amazon API Gateway": "AmazonApiGateway",
    "AWS Data Transfer": "AWSDataTransfer",
    "AWS Direct Connect": "AWSDirectConnect",
    "Amazon Relational Database Service": "AmazonRDS",
    "Amazon DynamoDB": "AmazonDynamoDB",
    "Amazon ElastiCache": "AmazonElastiCache",
    "Amazon Redshift": "AmazonRedshift",
    "Amazon SageMaker": "AmazonSageMaker",
    "Amazon Bedrock": "AmazonBedrock",
    "AWS Glue": "AWSGlue",
    "Amazon Athena": "AmazonAthena",
    "Amazon Simple Queue Service": "AWSQueueService",
    "Amazon Simple Notification Service": "AmazonSNS",
    "AWS Step Functions": "AmazonStates",
    "CloudWatch Events": "AWSEvents",
    "AmazonCloudWatch": "AmazonCloudWatch",
    "AWS CloudTrail": "AWSCloudTrail",
    "AWS Config": "AWSConfig",
    "AWS Systems Manager": "AWSSystemsManager",
    "AWS Key Management Service": "awskms",
    "AWS Secrets Manager": "AWSSecretsManager",
    "AWS Security Hub": "AWSSecurityHub",
    "Amazon GuardDuty": "AmazonGuardDuty",
    "Amazon Security Lake": "AmazonSecurityLake",
    "Amazon Cognito": "AmazonCognito",
    "AWS WAF": "awswaf",
    "AWS Amplify": "AWSAmplify",
    "AWS CodeArtifact": "AWSCodeArtifact",
    "AWS CodeCommit": "AWSCodeCommit",
    "AWS CodePipeline": "AWSCodePipeline",
    "CodeBuild": "CodeBuild",
    "AWS IoT": "AWSIoT",
    "AWS IoT Events": "AWSIoTEvents",
    "AWS IoT SiteWise": "AWSIoTSiteWise",
    "AWS Support (Business)": "AWSSupportBusiness",
    "AWS Support (Enterprise)": "AWSSupportEnterprise",
    "AWS Support (Developer)": "AWSDeveloperSupport",
}
"""AWS service names -> product code. Cost Explorer's ``EC2 - Other`` (EBS volumes, NAT
gateways, Elastic IPs and data transfer together) has no one category and is left unmapped."""

GCP_SERVICES: Final[Mapping[str, str]] = {
    # focus_converters gcp_category_mapping.csv (MIT), service.description -> category, less
    # "Stackdriver Monitoring"/"Stackdriver Trace" (filed there under Compute; Cloud Monitoring
    # and Trace are observability: Management and Governance, FOCUS 1.2 "Observability").
    "Directions API": "Integration",
    "Distance Matrix API": "Integration",
    "Maps Elevation API": "Integration",
    "Geocoding API": "Integration",
    "Geolocation API": "Integration",
    "Google Maps Mobile SDK": "Integration",
    "Roads API": "Integration",
    "Maps Static API": "Integration",
    "Time Zone API": "Integration",
    "Custom Search": "Integration",
    "Places API": "Integration",
    "Prediction": "AI and Machine Learning",
    "Street View Static API": "Integration",
    "Translate": "Developer Tools",
    "App Engine": "Compute",
    "BigQuery": "Databases",
    "Cloud DNS": "Networking",
    "Cloud SQL": "Databases",
    "Cloud Storage": "Storage",
    "Compute Engine": "Compute",
    "Actifio GO": "Security",
    "Vertex AI": "AI and Machine Learning",
    "Anthos": "Compute",
    "Anthos Config Management": "Compute",
    "API Gateway": "Integration",
    "Google Cloud Platform Apigee team Apigee Developer Portal": "Integration",
    "Artifact Registry": "Compute",
    "Cloud AutoML": "AI and Machine Learning",
    "BigQuery BI Engine": "Analytics",
    "BigQuery Data Transfer Service": "Migration",
    "BigQuery Reservation API": "Analytics",
    "BigQuery Storage API": "Storage",
    "Cloud Bigtable": "Databases",
    "Networking": "Networking",
    "Binary Authorization": "Security",
    "Cloud Build": "Developer Tools",
    "Cloud Functions": "Compute",
    "Cloud IoT Core": "Internet of Things",
    "Cloud Key Management Service (KMS)": "Security",
    "Cloud Optimization": "AI and Machine Learning",
    "Cloud Scheduler": "Developer Tools",
    "Cloud Tasks": "Developer Tools",
    "Stackdriver Trace": "Management and Governance",
    "Cloud Composer": "Analytics",
    "Confidential Computing": "Compute",
    "Contact Center AI Insights": "AI and Machine Learning",
    "Kubernetes Engine": "Compute",
    "Container Registry Vulnerability Scanning": "Security",
    "Data Catalog": "Analytics",
    "Cloud Dataflow": "Analytics",
    "Cloud Data Fusion": "Analytics",
    "Cloud Data Labeling Service": "AI and Machine Learning",
    "Google Cloud Platform Financial Services team Datashare": "Management and Governance",
    "Datastream": "Databases",
    "Cloud Dialogflow API": "Integration",
    "Cloud Data Loss Prevention": "Security",
    "Cloud Document API": "Integration",
    "Cloud Document AI API": "Integration",
    "Cloud Domains": "Web",
    "Enterprise Agreement": "Management and Governance",
    "Elastifile Cloud File System": "Storage",
    "Cloud Filestore": "Storage",
    "Firebase": "Mobile",
    "Firebase Auth": "Security",
    "Firebase Realtime Database": "Databases",
    "Firebase Hosting": "Mobile",
    "Game Services API": "Integration",
    "Google Quickstart Simple pre-configured Debian VM": "Compute",
    "Genomics": "AI and Machine Learning",
    "Backup for GKE": "Storage",
    "Cloud Healthcare": "Integration",
    "BeyondCorp Enterprise": "Security",
    "Identity Platform": "Security",
    "Cloud IDS": "Security",
    "Cloud Talent Solution": "AI and Machine Learning",
    "Cloud Natural Language": "AI and Machine Learning",
    "Live Stream API": "Integration",
    "Cloud Logging": "Management and Governance",
    "Looker Data Platform SaaS": "Analytics",
    "Maps Embed API": "Integration",
    "Cloud Media Translation API": "Integration",
    "Cloud Memorystore for Memcached": "Databases",
    "Anthos Service Mesh": "Management and Governance",
    "Dataproc Metastore": "Storage",
    "Cloud Machine Learning Engine": "AI and Machine Learning",
    "Stackdriver Monitoring": "Management and Governance",
    "MultiClusterIngress": "Compute",
    "Notebooks": "AI and Machine Learning",
    "Google Cloud Vision OCR On-Prem": "AI and Machine Learning",
    "On-Demand Scanning": "Security",
    "VM Manager": "Compute",
    "Certificate Authority Service": "Security",
    "Programmable Search Element": "Integration",
    "Cloud Pub/Sub": "Integration",
    "Pub/Sub Lite": "Integration",
    "reCAPTCHA Enterprise": "Security",
    "Recommendations AI": "AI and Machine Learning",
    "Cloud Memorystore for Redis": "Databases",
    "Remote Build Execution": "Developer Tools",
    "Cloud Run": "Compute",
    "Secret Manager": "Security",
    "Security Command Center": "Security",
    "Google Service Control": "Networking",
    "Source Repository": "Developer Tools",
    "Cloud Spanner": "Databases",
    "Speaker ID": "AI and Machine Learning",
    "Cloud Speech API": "Integration",
    "Transfer Service": "Storage",
    "Google Click to Deploy Deep Learning VM": "AI and Machine Learning",
    "Firebase Test Lab": "Mobile",
    "Cloud Text-to-Speech API": "Integration",
    "Cloud TPU": "AI and Machine Learning",
    "Transcode API": "Integration",
    "Transcoder API": "Integration",
    "Transfer Appliance": "Migration",
    "Maps SDK for Unity": "Integration",
    "Cloud Video Intelligence API": "Integration",
    "Video Stitcher API": "Integration",
    "Cloud Vision API": "Integration",
    "VMware Engine": "Compute",
    "Web Risk": "Security",
    "Workflows": "Developer Tools",
    "Zync": "Media",
    "Cloud CDN": "Networking",
    "Stackdriver": "Management and Governance",
}
"""GCP billing export ``service.description`` -> FOCUS ``ServiceCategory``."""

GCP_SUBCATEGORIES: Final[Mapping[str, str]] = {
    # FOCUS 1.2 supporting content, "Sample provider mappings" (GCP column), for the services
    # whose category there is the one above.
    "Compute Engine": "Virtual Machines",
    "Kubernetes Engine": "Containers",
    "Cloud Functions": "Serverless Compute",
    "Vertex AI": "Generative AI",
    "BigQuery": "Data Warehouses",
    "Cloud Bigtable": "NoSQL Databases",
    "Cloud SQL": "Relational Databases",
    "Cloud Spanner": "Relational Databases",
    "Cloud Memorystore for Redis": "Caching",
    "Cloud Memorystore for Memcached": "Caching",
    "Cloud Composer": "Data Processing",
    "Cloud Dataflow": "Data Processing",
    "Looker Data Platform SaaS": "Business Intelligence",
    "Cloud Pub/Sub": "Messaging",
    "Cloud Build": "Continuous Integration and Deployment",
    "Cloud Logging": "Observability",
    "Stackdriver Monitoring": "Observability",
    "Stackdriver Trace": "Observability",
    "Secret Manager": "Secret Management",
    "Cloud Key Management Service (KMS)": "Secret Management",
    "Certificate Authority Service": "Secret Management",
    "Networking": "Other (Networking)",
    "Cloud Storage": "Object Storage",
}
"""GCP service -> FOCUS 1.2 ``ServiceSubcategory`` (only where the spec's table says)."""


def aws_service_key(product_code: pl.Expr, service_name: pl.Expr) -> pl.Expr:
    """The AWS product code of a row: its own, or the one its service name stands for."""
    from_name = service_name.replace_strict(AWS_SERVICE_NAMES, default=None, return_dtype=pl.String)
    return pl.coalesce(product_code, from_name)


def with_service_category(
    frame: pl.DataFrame, key: pl.Expr, provider: str
) -> tuple[pl.DataFrame, dict[str, int]]:
    """``frame`` with ``ServiceCategory``/``ServiceSubcategory`` looked up from ``key`` (the
    provider's identifier: an AWS product code, a GCP service description), and the count of
    rows per identifier the tables do not know (for the run manifest)."""
    categories, subcategories = _tables(provider)
    keyed = frame.with_columns(key.alias("__service_key"))
    category = pl.col("__service_key").replace_strict(
        categories, default=None, return_dtype=pl.String
    )
    subcategory = pl.col("__service_key").replace_strict(
        subcategories, default=None, return_dtype=pl.String
    )
    result = keyed.with_columns(
        category.alias("ServiceCategory"), subcategory.alias("ServiceSubcategory")
    )
    unmapped = unmapped_services(result, "__service_key", fallback="ServiceName")
    return result.drop("__service_key"), unmapped


def unmapped_services(
    frame: pl.DataFrame, key: str = "ServiceName", fallback: str | None = None
) -> dict[str, int]:
    """Rows per service left without a ``ServiceCategory``, named by ``key`` (or ``fallback``,
    or ``(none)`` when the row names no service at all), sorted by name."""
    missing = frame.filter(pl.col("ServiceCategory").is_null())
    if missing.height == 0:
        return {}
    names = [pl.col(key)]
    if fallback is not None and fallback in frame.columns:
        names.append(pl.col(fallback))
    name = pl.coalesce(*names, pl.lit("(none)"))
    counts = missing.group_by(name.alias("service")).len().sort("service")
    return {str(service): int(count) for service, count in counts.iter_rows()}


def _tables(provider: str) -> tuple[Mapping[str, str], Mapping[str, str]]:
    if provider == "aws":
        return AWS_PRODUCT_CODES, AWS_SUBCATEGORIES
    if provider == "gcp":
        return GCP_SERVICES, GCP_SUBCATEGORIES
    raise ValueError(f"no service category table for provider {provider!r}")
