# An existing MSK cluster (IAM auth enabled), raw-append run hourly by the DAG instead of as a
# service. Allow the output job_security_group_id on the cluster's security group, port 9098.
provider "aws" {
  region = var.region
}

variable "region" {
  description = "AWS region of the MSK cluster."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the MSK cluster."
  type        = string
}

variable "private_subnet_ids" {
  description = "Two or more private subnets in different availability zones."
  type        = list(string)
}

variable "msk_cluster_arn" {
  description = "ARN of the existing MSK cluster."
  type        = string
}

variable "image_tag" {
  description = "Tag of the job image pushed to the module's ECR repository."
  type        = string
}

module "lakehouse" {
  source = "../.."

  name               = "orders-lake"
  vpc_id             = var.vpc_id
  private_subnet_ids = var.private_subnet_ids
  lake_bucket_name   = "orders-lake-${var.region}"
  msk_cluster_arn    = var.msk_cluster_arn
  kafka_topics       = ["orders", "members"]
  image_tag          = var.image_tag
  raw_append_mode    = "scheduled"
  athena_tables      = ["processed"]
}

output "job_security_group_id" {
  description = "Allow this security group on the MSK cluster's port 9098."
  value       = module.lakehouse.job_security_group_id
}
