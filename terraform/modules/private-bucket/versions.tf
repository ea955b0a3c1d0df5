# A module states the minimum it needs; the root module (../../versions.tf) pins the range.
terraform {
  required_providers {
    aws = { source = "hashicorp/aws", version = ">= 5.80" }
  }
}
