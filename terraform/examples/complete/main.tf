# Everything, with a new MSK cluster and the continuous raw-append service.
#   terraform init && terraform apply -var image_tag=$(git rev-parse --short HEAD)
provider "aws" {
  region = var.region
}

variable "region" {
  description = "AWS region to deploy into."
  type        = string
  default     = "eu-west-1"
}

variable "vpc_id" {
  description = "VPC with private subnets that reach S3, ECR and CloudWatch."
  type        = string
}

variable "private_subnet_ids" {
  description = "Two or more private subnets in different availability zones."
  type        = list(string)
}

variable "image_tag" {
  description = "Tag of the job image pushed to the module's ECR repository."
  type        = string
}

module "lakehouse" {
  source = "../.."

  name               = "lakehouse"
  vpc_id             = var.vpc_id
  private_subnet_ids = var.private_subnet_ids
  lake_bucket_name   = "lakehouse-${data.aws_caller_identity.current.account_id}-${var.region}"
  image_tag          = var.image_tag
  raw_append_mode    = "continuous"
  tags               = { "team" = "data-platform" }
}

data "aws_caller_identity" "current" {}

output "lake_root" {
  description = "The jobs' lake root."
  value       = module.lakehouse.lake_root
}

output "ecr_repository_url" {
  description = "Where to push the job image."
  value       = module.lakehouse.ecr_repository_url
}

output "mwaa_webserver_url" {
  description = "Airflow UI."
  value       = module.lakehouse.mwaa_webserver_url
}
