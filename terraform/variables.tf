variable "name" {
  description = "Prefix of every resource name (letters, digits and hyphens)."
  type        = string
  default     = "lakehouse"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name))
    error_message = "name: 2 to 21 lower-case letters, digits or hyphens, starting with a letter."
  }
}

variable "vpc_id" {
  description = "VPC of the ECS tasks, the MSK cluster (when created) and MWAA."
  type        = string
}

variable "private_subnet_ids" {
  description = "At least two private subnets in different availability zones, with a route to S3, ECR and CloudWatch (NAT gateway or VPC endpoints). MWAA uses the first two."
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) >= 2
    error_message = "private_subnet_ids: give at least two subnets in different availability zones (MWAA and MSK need two)."
  }
}

variable "lake_bucket_name" {
  description = "Name of the S3 bucket holding the Delta tables (created)."
  type        = string
}

variable "lake_prefix" {
  description = "Key prefix of the lake inside the bucket (the jobs' LAKEHOUSE_LAKE_ROOT is s3://<bucket>/<prefix>)."
  type        = string
  default     = "lake"
}

variable "msk_cluster_arn" {
  description = "ARN of an existing MSK cluster with IAM authentication. Null creates a new cluster."
  type        = string
  default     = null
}

variable "msk_kafka_version" {
  description = "Kafka version of a created MSK cluster."
  type        = string
  default     = "3.6.0"
}

variable "msk_broker_instance_type" {
  description = "Broker instance type of a created MSK cluster."
  type        = string
  default     = "kafka.m7g.large"
}

variable "msk_broker_volume_gib" {
  description = "EBS volume per broker of a created MSK cluster, in GiB."
  type        = number
  default     = 500
}

variable "kafka_topics" {
  description = "Topics raw-append reads (IAM grants read on exactly these)."
  type        = list(string)
  default     = ["orders", "members"]
}

variable "kinesis_streams" {
  description = "Kinesis Data Streams raw-append reads (IAM grants read on exactly these); empty for Kafka only."
  type        = list(string)
  default     = []
}

variable "create_kinesis_streams" {
  description = "Create the kinesis_streams (provisioned, encrypted with the lake key) instead of reading existing ones."
  type        = bool
  default     = false
}

variable "kinesis_shard_count" {
  description = "Shards of each created Kinesis stream."
  type        = number
  default     = 2
}

variable "kafka_consumer_group" {
  description = "Consumer group of the continuous raw-append service (raw_append.group_id); its tasks share the partitions."
  type        = string
  default     = "lakehouse-raw-append"
}

variable "image_tag" {
  description = "Tag of the job image in the created ECR repository, e.g. the git commit (tags are immutable: push a new tag per build)."
  type        = string
}

variable "metrics_scrape_cidrs" {
  description = "CIDR blocks allowed to scrape the continuous raw-append tasks' Prometheus endpoint (port 9464). Empty: no scrape access."
  type        = list(string)
  default     = []
}

variable "raw_append_mode" {
  description = "continuous: an ECS service runs raw-append --trigger continuous (the DAG leaves raw-append out); scheduled: the hourly DAG runs raw-append --trigger once."
  type        = string
  default     = "continuous"

  validation {
    condition     = contains(["continuous", "scheduled"], var.raw_append_mode)
    error_message = "raw_append_mode: \"continuous\" or \"scheduled\"."
  }
}

variable "raw_append_desired_count" {
  description = "Continuous raw-append tasks, one ECS service each (index 0..n-1): Kafka partitions shared by the consumer group, Kinesis shards by index (at most the partition or shard count is useful)."
  type        = number
  default     = 1
}

variable "task_sizes" {
  description = "CPU units and memory (MiB) per job's Fargate task."
  type = map(object({
    cpu    = number
    memory = number
  }))
  default = {
    raw-append   = { cpu = 1024, memory = 2048 }
    stream-join  = { cpu = 2048, memory = 8192 }
    merge-upsert = { cpu = 2048, memory = 8192 }
    maintenance  = { cpu = 2048, memory = 4096 }
  }
}

variable "log_retention_days" {
  description = "Retention of the jobs' CloudWatch log groups."
  type        = number
  default     = 365
}

variable "emf_metrics" {
  description = "Jobs write CloudWatch Embedded Metric Format records (namespace Lakehouse) to their logs."
  type        = bool
  default     = true
}

variable "mwaa_airflow_version" {
  description = "Airflow version of the MWAA environment (the DAG is tested with 2.10)."
  type        = string
  default     = "2.10.3"
}

variable "mwaa_environment_class" {
  description = "MWAA environment class."
  type        = string
  default     = "mw1.small"
}

variable "mwaa_webserver_access_mode" {
  description = "PRIVATE_ONLY (reach the Airflow UI through the VPC) or PUBLIC_ONLY."
  type        = string
  default     = "PRIVATE_ONLY"
}

variable "glue_database" {
  description = "Glue database Athena queries (symlink tables and their partitions)."
  type        = string
  default     = "lakehouse"
}

variable "athena_tables" {
  description = "Tables whose symlink manifests the DAG refreshes and whose partitions it adds to Athena after each run."
  type        = list(string)
  default     = ["processed"]
}

variable "maintained_tables" {
  description = "Tables (names in schemas/pipeline.toml) the DAG compacts daily and vacuums weekly."
  type        = list(string)
  default     = ["raw_order", "raw_member", "curated", "processed"]
}

variable "noncurrent_version_expiration_days" {
  description = "Days a noncurrent object version (left by vacuum or an overwrite) is kept in the versioned lake bucket."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}
