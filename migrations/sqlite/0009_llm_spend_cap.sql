-- A tenant's monthly LLM spend cap (issue 11), in millionths of a US dollar: once its LLM
-- cost this calendar month (UTC) reaches it, the tenant answers offline. NULL: the node's
-- default (SALESBOY_LLM_MONTHLY_SPEND_CAP_MICROS), if any.
-- Keep in step with ../postgres/0009_llm_spend_cap.sql.
ALTER TABLE tenants ADD COLUMN llm_monthly_spend_cap_micros INTEGER;
