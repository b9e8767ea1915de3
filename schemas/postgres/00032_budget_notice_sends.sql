-- +goose Up
-- A notice's row now stays for its period whatever the budget's amount
-- does: a raise no longer deletes it, so lowering the amount back cannot
-- send it again. It is sent again only when the threshold's level at the
-- current amount lies above the cost it last reported, and at most a few
-- times per period: sends counts the times it went out, the first
-- included. amount and cost are those of its last send.
ALTER TABLE budget_notices ADD COLUMN sends smallint NOT NULL DEFAULT 1 CHECK (sends >= 1);

-- +goose Down
ALTER TABLE budget_notices DROP COLUMN sends;
