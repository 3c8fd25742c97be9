# Least-privilege GCP roles for gpucost: the gcp-bigquery collector runs query jobs (in the job
# project) over the Cloud Billing export dataset; gcp-catalog lists Cloud Billing catalog SKUs.
# Workload Identity lets the Kubernetes ServiceAccount act as the Google service account.

terraform {
  required_version = ">= 1.5"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 5.0"
    }
  }
}

variable "project_id" {
  type        = string
  description = "Project that runs gpucost's BigQuery jobs (pays for the bytes they scan)."
}

variable "billing_export_project" {
  type        = string
  description = "Project holding the Cloud Billing export dataset."
}

variable "billing_export_dataset" {
  type        = string
  description = "Dataset id of the Cloud Billing (detailed) export."
}

variable "billing_account_id" {
  type        = string
  description = "Billing account whose prices and costs gpucost reads (XXXXXX-XXXXXX-XXXXXX)."
}

variable "namespace" {
  type    = string
  default = "gpucost"
}

variable "service_account" {
  type    = string
  default = "gpucost"
}

resource "google_service_account" "gpucost" {
  project      = var.project_id
  account_id   = "gpucost"
  display_name = "gpucost collectors"
}

# Run query jobs (bigquery.jobs.create) in the job project.
resource "google_project_iam_member" "bigquery_job_user" {
  project = var.project_id
  role    = "roles/bigquery.jobUser"
  member  = "serviceAccount:${google_service_account.gpucost.email}"
}

# Read the billing export tables, and nothing else in BigQuery.
resource "google_bigquery_dataset_iam_member" "billing_export_viewer" {
  project    = var.billing_export_project
  dataset_id = var.billing_export_dataset
  role       = "roles/bigquery.dataViewer"
  member     = "serviceAccount:${google_service_account.gpucost.email}"
}

# Read the billing account's costs and prices (the catalog and account-specific pricing).
resource "google_billing_account_iam_member" "billing_viewer" {
  billing_account_id = var.billing_account_id
  role               = "roles/billing.viewer"
  member             = "serviceAccount:${google_service_account.gpucost.email}"
}

# GKE Workload Identity: the Kubernetes ServiceAccount may act as this service account.
resource "google_service_account_iam_member" "workload_identity" {
  service_account_id = google_service_account.gpucost.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[${var.namespace}/${var.service_account}]"
}

output "service_account_email" {
  description = "Annotate the gpucost ServiceAccount with iam.gke.io/gcp-service-account = this."
  value       = google_service_account.gpucost.email
}
